"""TensorRT engine building (export/tensorrt.py): version branching, profiles, fp16 conversion,
sidecar; a stand-in ``tensorrt`` module records what the builder is asked to do (no GPU here).
The test marked ``tensorrt`` builds a real engine where TensorRT and a CUDA device exist."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qedge.errors import QedgeError
from qedge.export.onnx import ort_session
from qedge.export.tensorrt import (EXIT_UNAVAILABLE, build_engine, has_qdq, parse_version, plan_build,
                                   profile_shapes, to_fp16)
from qedge.runtime.features import FeatureConfig
from qedge.runtime.model_info import ModelInfo


def _info(frames: int = 20, mels: int = 8) -> ModelInfo:
    return ModelInfo(labels=["a", "b", "c"], features=FeatureConfig(n_mels=mels).to_dict(),
                     arch={"name": "toy", "kwargs": {}}, macs=1234, params=99, window_frames=frames)


@pytest.fixture()
def toy_onnx(tmp_path) -> Path:
    """features (b,4,20,8) → Conv 3×3 → Relu → ReduceMean → Gemm → Softmax, with qedge metadata."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.3, "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b")
    fc = numpy_helper.from_array(rng.standard_normal((3, 8)).astype(np.float32), "fc")
    axes = numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("Conv", ["features", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("ReduceMean", ["r", "axes"], ["m"], keepdims=0),
        helper.make_node("Gemm", ["m", "fc"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "toy", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4, 20, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])], [w, b, fc, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    for key, value in _info().to_props().items():
        model.metadata_props.add(key=key, value=value)
    path = tmp_path / "toy.onnx"
    onnx.save(model, str(path))
    return path


def test_parse_version():
    assert parse_version("10.3.0") == (10, 3, 0)
    assert parse_version("10.0.1.6") == (10, 0, 1, 6)
    assert parse_version("11.0.0.post1") == (11, 0, 0)
    with pytest.raises(QedgeError):
        parse_version("unknown")


def test_plan_branches_on_version():
    jetson = plan_build("10.3.0", fp16=True, qdq=False)
    assert not jetson.strongly_typed and jetson.builder_flags == ("FP16",) and jetson.precision == "fp16"
    jetson_int8 = plan_build("10.7.0", fp16=False, qdq=True)
    assert jetson_int8.builder_flags == ("INT8",) and jetson_int8.precision == "int8-qdq"
    desktop = plan_build("11.1.0", fp16=True, qdq=False)
    assert desktop.strongly_typed and desktop.builder_flags == () and desktop.convert_fp16
    desktop_int8 = plan_build("11.1.0", fp16=False, qdq=True)
    assert desktop_int8.strongly_typed and desktop_int8.builder_flags == () and not desktop_int8.convert_fp16
    assert plan_build("10.3.0").precision == "fp32" and plan_build("11.0").precision == "fp32"
    with pytest.raises(QedgeError) as err:
        plan_build("8.6.1")
    assert err.value.exit_code == EXIT_UNAVAILABLE


def test_profile_shapes():
    info = _info(frames=101, mels=64)
    assert profile_shapes(info) == ((1, 4, 101, 64),) * 3
    assert profile_shapes(info, max_batch=8) == ((1, 4, 101, 64), (1, 4, 101, 64), (8, 4, 101, 64))
    assert profile_shapes(info, max_batch=8, opt_batch=8)[1] == (8, 4, 101, 64)
    for bad in ({"max_batch": 0}, {"max_batch": 2, "opt_batch": 3}):
        with pytest.raises(QedgeError):
            profile_shapes(info, **bad)


def test_fp16_conversion_keeps_fp32_io_and_outputs(toy_onnx):
    proto = onnx.load(str(toy_onnx))
    half = to_fp16(proto)
    onnx.checker.check_model(half, full_check=True)
    assert all(t.data_type != TensorProto.FLOAT for t in half.graph.initializer)
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    path = toy_onnx.with_name("toy16.onnx")
    onnx.save(half, str(path))
    x = np.random.default_rng(1).standard_normal((3, 4, 20, 8)).astype(np.float32)
    ref = ort_session(toy_onnx).run(None, {"features": x})[0]
    got = ort_session(path).run(None, {"features": x})[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=2e-3)


class _FakeTrt(types.SimpleNamespace):
    """Just enough of the TensorRT Python API to record a build."""

    def __init__(self, version: str, gpu: bool = True) -> None:
        calls: dict = {"flags": [], "network_flags": None, "profile": None, "workspace": None}
        fake = self

        class Logger:
            WARNING = 2

            def __init__(self, level):
                pass

        class Parser:
            def __init__(self, network, logger):
                self.num_errors = 0

            def parse(self, data):
                calls["parsed"] = onnx.load_from_string(data)
                return True

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                calls["profile"] = (name, lo, opt, hi)

        class Config:
            def set_memory_pool_limit(self, pool, size):
                calls["workspace"] = size

            def set_flag(self, flag):
                calls["flags"].append(flag)

            def add_optimization_profile(self, profile):
                pass

        class Builder:
            def __init__(self, logger):
                if not gpu:
                    raise TypeError("pybind11::init(): factory function returned nullptr")

            def create_network(self, flags):
                calls["network_flags"] = flags
                return object()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                return b"fake-engine-" + fake.__version__.encode()

        super().__init__(
            __version__=version, Logger=Logger, Builder=Builder, OnnxParser=Parser,
            NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=5),
            BuilderFlag=types.SimpleNamespace(FP16="FP16", INT8="INT8"),
            MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"), calls=calls,
        )


def test_build_on_tensorrt_10_sets_precision_flags(tmp_path, toy_onnx):
    trt = _FakeTrt("10.3.0")
    engine, plan = build_engine(toy_onnx, tmp_path / "toy.engine", fp16=True, workspace_mb=256,
                                max_batch=4, trt=trt)
    assert engine.read_bytes() == b"fake-engine-10.3.0"
    assert trt.calls["flags"] == ["FP16"] and trt.calls["network_flags"] == 0
    assert trt.calls["workspace"] == 256 << 20
    assert trt.calls["profile"] == ("features", (1, 4, 20, 8), (1, 4, 20, 8), (4, 4, 20, 8))
    info = ModelInfo.read_sidecar(engine)  # sidecar round trip
    assert info.labels == ["a", "b", "c"] and info.window_frames == 20 and info.macs == 1234
    assert info.extra["engine_precision"] == "fp16" and info.extra["max_batch"] == "4"


def test_build_on_tensorrt_11_is_strongly_typed(tmp_path, toy_onnx):
    trt = _FakeTrt("11.0.0")
    engine, plan = build_engine(toy_onnx, tmp_path / "toy.engine", fp16=True, trt=trt)
    assert trt.calls["flags"] == [] and trt.calls["network_flags"] == 1 << 5
    parsed = trt.calls["parsed"]  # the ONNX handed to the parser was converted to fp16
    assert has_qdq(parsed) is False
    assert all(t.data_type == TensorProto.FLOAT16 for t in parsed.graph.initializer if t.name != "axes")
    assert ModelInfo.read_sidecar(engine).extra["tensorrt"] == "11.0.0"


def test_missing_tensorrt_or_gpu_exits_3(tmp_path, toy_onnx, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(QedgeError, match="'tensorrt' is not installed") as err:
        build_engine(toy_onnx, tmp_path / "x.engine")
    assert err.value.exit_code == EXIT_UNAVAILABLE
    with pytest.raises(QedgeError, match="no usable CUDA device") as err:
        build_engine(toy_onnx, tmp_path / "x.engine", trt=_FakeTrt("10.3.0", gpu=False))
    assert err.value.exit_code == EXIT_UNAVAILABLE
    assert not (tmp_path / "x.engine").exists()


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


@pytest.mark.tensorrt
def test_real_engine_build_and_run(tmp_path, toy_onnx):
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    if not _cuda_available():
        pytest.skip("no CUDA device")
    engine, plan = build_engine(toy_onnx, tmp_path / "toy.engine", max_batch=2, trt=trt)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    deserialized = runtime.deserialize_cuda_engine(engine.read_bytes())
    assert deserialized is not None and deserialized.num_io_tensors == 2
    assert ModelInfo.read_sidecar(engine).extra["engine_precision"] == plan.precision
