"""TensorRT engines (``qedge export --trt``): one serialized engine per model, plus its sidecar.

TensorRT is imported lazily (``qedge[trt]``). The build branches on ``tensorrt.__version__``
(design.md §8):

- **10.x** (Jetson JetPack 6): a weakly typed network; ``--fp16`` sets ``BuilderFlag.FP16``;
  an ONNX with Q/DQ nodes (``--int8``) sets ``BuilderFlag.INT8`` so the explicit quantization
  scales of the QDQ graph are used (no calibrator: implicit INT8 calibration is deprecated);
- **≥ 11** (desktop wheels): only strongly typed networks exist (``STRONGLY_TYPED``; no FP16/INT8
  builder flags): precision comes from the ONNX tensor types. ``--fp16`` therefore converts the
  ONNX to fp16 first (:func:`to_fp16`: float initializers and constants → fp16, a Cast after the
  input and before the output, so the engine's I/O stays fp32); a QDQ ONNX is used as it is;
- **< 10**: refused (the ONNX parser and APIs used here are TensorRT 10's).

Optimisation profile: input ``features`` at the fixed listen window ``(b, 4, listen frames, n_mels)``
(``info.listen.window_frames``, else ``window_frames``)
with b ∈ [1, max_batch]; ``opt`` = 1 by default, because ``qedge listen`` runs one window per
hop (batch 1) and TensorRT picks its tactics for the opt shape; pass ``opt_batch=max_batch`` for
offline batch scoring. A time-dynamic ONNX gets the same fixed window (engines are built per window).

Without the ``tensorrt`` module or a CUDA device the build stops with ONE line naming what is
missing and exit code 3; the CLI has written and verified the ONNX files before that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qedge.errors import QedgeError
from qedge.runtime.model_info import INPUT_NAME, ModelInfo

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = [
    "EXIT_UNAVAILABLE",
    "BuildPlan",
    "parse_version",
    "plan_build",
    "profile_shapes",
    "has_qdq",
    "to_fp16",
    "import_tensorrt",
    "build_engine",
    "engine_path_for",
]

#: Exit code when TensorRT or a CUDA device is missing (the ONNX files are still written).
EXIT_UNAVAILABLE = 3


@dataclass(frozen=True)
class BuildPlan:
    """How to build for one TensorRT version: network flags, builder flags, fp16 conversion."""

    version: tuple[int, ...]
    strongly_typed: bool
    builder_flags: tuple[str, ...] = ()
    convert_fp16: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def precision(self) -> str:
        if "INT8" in self.builder_flags or "qdq" in self.notes:
            return "int8-qdq" + ("+fp16" if self.convert_fp16 or "FP16" in self.builder_flags else "")
        return "fp16" if self.convert_fp16 or "FP16" in self.builder_flags else "fp32"


def parse_version(version: str) -> tuple[int, ...]:
    """``"10.3.0.post1"`` → ``(10, 3, 0)``; raises :class:`QedgeError` if it has no leading number."""
    match = re.match(r"^\s*(\d+)((?:\.\d+)*)", str(version))
    if not match:
        raise QedgeError(f"cannot read the TensorRT version {version!r}")
    return tuple(int(x) for x in (match.group(1) + match.group(2)).split("."))


def plan_build(version: str, fp16: bool = False, qdq: bool = False) -> BuildPlan:
    """The build recipe for TensorRT ``version`` (see the module docstring)."""
    parts = parse_version(version)
    if parts[0] < 10:
        raise QedgeError(f"TensorRT {version} is too old: qedge builds engines with TensorRT >= 10",
                         exit_code=EXIT_UNAVAILABLE)
    notes = ("qdq",) if qdq else ()
    if parts[0] == 10:
        flags = tuple(f for f, on in (("FP16", fp16), ("INT8", qdq)) if on)
        return BuildPlan(parts, strongly_typed=False, builder_flags=flags, notes=notes)
    return BuildPlan(parts, strongly_typed=True, builder_flags=(), convert_fp16=fp16, notes=notes)


def profile_shapes(info: ModelInfo, max_batch: int = 1, opt_batch: int | None = None
                   ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) input shapes: batch 1 / ``opt_batch`` (default 1) / ``max_batch`` at the window."""
    if max_batch < 1:
        raise QedgeError(f"--max-batch must be >= 1, got {max_batch}")
    opt = 1 if opt_batch is None else int(opt_batch)
    if not 1 <= opt <= max_batch:
        raise QedgeError(f"opt batch {opt} is outside 1..{max_batch}")
    tail = (4, int(info.listen.window_frames or info.window_frames), int(info.features["n_mels"]))
    return (1, *tail), (opt, *tail), (int(max_batch), *tail)


def has_qdq(proto: "onnx.ModelProto") -> bool:
    """True when the graph carries explicit quantization (QuantizeLinear / DequantizeLinear)."""
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node)


def to_fp16(proto: "onnx.ModelProto") -> "onnx.ModelProto":
    """An fp16 copy of an fp32 graph with fp32 I/O (for strongly typed TensorRT ≥ 11).

    Float32 initializers and ``Constant`` values become float16, every float32 ``Cast`` target and
    value_info becomes float16; the input is cast to fp16 right after entry and the output back to
    fp32 before it leaves, so callers still feed and read fp32. QDQ graphs are refused (their
    scales must stay fp32 for TensorRT's explicit quantization).
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if has_qdq(proto):
        raise QedgeError("--fp16 with an INT8 (QDQ) model: build the INT8 engine without --fp16 on TensorRT >= 11")
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    for i, tensor in enumerate(graph.initializer):
        if tensor.data_type == TensorProto.FLOAT:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(tensor).astype(np.float16), tensor.name))
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
    del graph.value_info[:]
    inputs = {v.name for v in graph.input if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    outputs = {v.name for v in graph.output if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in inputs:
                node.input[k] = f"{name}.fp16"
        for k, name in enumerate(node.output):
            if name in outputs:
                node.output[k] = f"{name}.fp16"
    head = [helper.make_node("Cast", [n], [f"{n}.fp16"], to=TensorProto.FLOAT16, name=f"{n}/to_fp16") for n in inputs]
    tail = [helper.make_node("Cast", [f"{n}.fp16"], [n], to=TensorProto.FLOAT, name=f"{n}/to_fp32") for n in outputs]
    nodes = head + list(graph.node) + tail
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def import_tensorrt() -> Any:
    """``import tensorrt`` or raise a one-line :class:`QedgeError` with exit code 3."""
    try:
        import tensorrt  # type: ignore[import-not-found]
    except ImportError as exc:
        raise QedgeError("TensorRT engine not built: the Python package 'tensorrt' is not installed "
                         "(pip install \"qedge[trt]\", or use JetPack's TensorRT on a Jetson)",
                         exit_code=EXIT_UNAVAILABLE) from exc
    return tensorrt


def engine_path_for(onnx_path: str | Path) -> Path:
    """``model.onnx`` → ``model.engine``; ``model.int8.onnx`` → ``model.int8.engine``."""
    return Path(onnx_path).with_suffix(".engine")


def _flag(enum: Any, name: str) -> Any:
    try:
        return getattr(enum, name)
    except AttributeError as exc:
        raise QedgeError(f"this TensorRT has no {name} flag", exit_code=EXIT_UNAVAILABLE) from exc


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path | None = None,
    info: ModelInfo | None = None,
    *,
    fp16: bool = False,
    workspace_mb: int = 1024,
    max_batch: int = 1,
    opt_batch: int | None = None,
    trt: Any = None,
) -> tuple[Path, BuildPlan]:
    """Build and write a serialized TensorRT engine from an ONNX file, plus ``<engine>.json``.

    ``trt`` is the ``tensorrt`` module (imported here when None; tests pass a stand-in). Raises
    :class:`QedgeError` (exit code 3) when TensorRT or a CUDA device is missing, and
    :class:`QedgeError` (exit code 1) when parsing or building fails.
    """
    import onnx

    from qedge.checkpoint import atomic_write_bytes
    from qedge.export.onnx import read_info

    onnx_path = Path(onnx_path)
    info = info or read_info(onnx_path)
    engine_path = Path(engine_path) if engine_path is not None else engine_path_for(onnx_path)
    if workspace_mb < 1:
        raise QedgeError(f"--workspace must be >= 1 MB, got {workspace_mb}")
    shapes = profile_shapes(info, max_batch, opt_batch)
    trt = trt if trt is not None else import_tensorrt()
    proto = onnx.load(str(onnx_path))
    plan = plan_build(str(trt.__version__), fp16=fp16, qdq=has_qdq(proto))
    if plan.convert_fp16:
        proto = to_fp16(proto)
    logger = trt.Logger(trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # noqa: BLE001 - TensorRT raises plain RuntimeError/TypeError without a GPU
        raise QedgeError(f"TensorRT engine not built: no usable CUDA device ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                         exit_code=EXIT_UNAVAILABLE) from exc
    if builder is None:
        raise QedgeError("TensorRT engine not built: no usable CUDA device", exit_code=EXIT_UNAVAILABLE)
    flags = 0
    if plan.strongly_typed:
        flags |= 1 << int(_flag(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(proto.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise QedgeError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    for name in plan.builder_flags:
        config.set_flag(_flag(trt.BuilderFlag, name))
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *shapes)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise QedgeError(f"{onnx_path}: TensorRT failed to build an engine (see its log above)")
    atomic_write_bytes(engine_path, bytes(serialized)).chmod(0o644)
    extra = dict(info.extra)
    extra.update({"engine_precision": plan.precision, "tensorrt": str(trt.__version__),
                  "max_batch": str(shapes[2][0]), "opt_batch": str(shapes[1][0]), "source_onnx": onnx_path.name})
    ModelInfo(**{**info.to_dict(), "extra": extra}).write_sidecar(engine_path)
    return engine_path, plan
