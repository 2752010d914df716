"""ONNX export (export/onnx.py, export/compact.py) and the `qedge export` command."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from qedge.calib.reader import features_array
from qedge.calib.select import held_out
from qedge.errors import QedgeError
from qedge.export.compact import compact_model, compact_onnx, factor_hamilton
from qedge.export.onnx import (check_standard_ops, export_onnx, model_info, ort_latency_ms, ort_session,
                               read_info, verify_onnx)
from qedge.models import build
from qedge.nn import hamilton_kernel
from qedge.runtime.features import FeatureConfig
from qedge.runtime.model_info import ModelInfo

LABELS = [str(d) for d in range(10)]  # the FSDD vocabulary
CLIP_SECONDS = 0.5  # FSDD digits are ~0.5 s: 51 frames at hop 10 ms


def _model(task_seed: int = 0) -> torch.nn.Module:
    """A small QCNN6 with non-trivial BatchNorm statistics, so BN fusion and its scales matter."""
    torch.manual_seed(task_seed)
    model = build("qcnn6", num_classes=len(LABELS), width=0.25)
    gen = torch.Generator().manual_seed(task_seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=gen) * 2 - 1)
            module.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
    return model.eval()


def _meta(task: str = "single-label") -> dict:
    return {"arch": "qcnn6", "arch_kwargs": {"num_classes": len(LABELS), "width": 0.25},
            "labels": LABELS, "features": FeatureConfig().to_dict(), "clip_seconds": CLIP_SECONDS,
            "task": task, "history": []}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return _model()


@pytest.fixture(scope="module")
def info(model) -> ModelInfo:
    return model_info(model, _meta(), lipschitz=False)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model, info) -> Path:
    return export_onnx(model, info, tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="module")
def real_features(fsdd_root, info) -> np.ndarray:
    """Features of 6 held-out FSDD recordings (digits 0–5), via the runtime's extractor."""
    clips, _ = held_out(fsdd_root, 12, seed=1)
    return features_array(clips[:6], info.features, info.window_frames)


def test_model_info_counts(model, info):
    assert info.window_frames == 51  # 1 + 16000 // 320
    assert info.params == sum(p.numel() for p in model.parameters())
    assert info.macs > 0 and info.labels == LABELS and info.task == "single-label"
    assert info.arch == {"name": "qcnn6", "kwargs": {"num_classes": 10, "width": 0.25}}


def test_graph_is_standard_with_metadata(exported, info):
    proto = onnx.load(str(exported))
    onnx.checker.check_model(proto, full_check=True)
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node) and not proto.functions
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    ops = {n.op_type for n in proto.graph.node}
    assert "Softmax" in ops and "Conv" in ops
    [inp], [out] = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("features", "scores")
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[2].dim_param and [dims[1].dim_value, dims[3].dim_value] == [4, 64]
    assert ModelInfo.from_props({p.key: p.value for p in proto.metadata_props}) == info
    assert read_info(exported) == info


def test_dynamic_batch_and_verify_on_real_clips(exported, model, real_features):
    scores = ort_session(exported).run(["scores"], {"features": real_features[:3]})[0]
    assert scores.shape == (3, len(LABELS))
    np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-5)  # softmax probabilities
    report = verify_onnx(exported, model, real_features)
    assert report["n"] == 6 and report["top1_agreement"] == 1.0
    assert report["max_abs_diff"] <= 1e-4 * report["max_abs_ref"]
    assert ort_latency_ms(exported, repeats=3, warmup=1, threads=1) > 0


def test_verify_catches_a_broken_graph(tmp_path, exported, model, real_features):
    proto = onnx.load(str(exported))
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    init = next(t for t in proto.graph.initializer if t.name == conv.input[1])
    weight = numpy_helper.to_array(init).copy()
    weight[: weight.shape[0] // 2] *= -1.0  # flip half the filters of the first conv
    init.CopyFrom(numpy_helper.from_array(weight, init.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, str(broken))
    with pytest.raises(QedgeError, match="disagrees with PyTorch"):
        verify_onnx(broken, model, real_features)


def test_non_standard_operator_is_refused(exported):
    proto = onnx.load(str(exported))
    proto.graph.node.append(helper.make_node("FancyOp", ["scores"], ["x"], domain="com.example"))
    with pytest.raises(QedgeError, match="com.example::FancyOp"):
        check_standard_ops(proto)


def test_mean_norm_model_exports_and_verifies(tmp_path, real_features):
    """The per-window log-mel mean removal (mean_norm) traces to standard ReduceMean/Sub nodes and
    matches PyTorch on real clips, at the fixed and at a dynamic window length."""
    torch.manual_seed(3)
    normed = build("qcnn6", num_classes=len(LABELS), width=0.25, mean_norm=True).eval()
    meta = {**_meta(), "arch_kwargs": dict(normed.arch_kwargs)}
    info = model_info(normed, meta, lipschitz=False)
    path = export_onnx(normed, info, tmp_path / "mean-norm.onnx", dynamic_time=True)
    assert "ReduceMean" in {n.op_type for n in onnx.load(str(path)).graph.node}
    report = verify_onnx(path, normed, real_features)
    assert report["top1_agreement"] == 1.0 and report["max_abs_diff"] <= 1e-4 * report["max_abs_ref"]
    longer = np.concatenate([real_features[:2], real_features[:2, :, :29]], axis=2)
    got = ort_session(path).run(["scores"], {"features": longer})[0]
    with torch.no_grad():
        ref = torch.softmax(normed(torch.from_numpy(longer)), -1).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_library_default_keeps_the_time_axis_dynamic_as_the_cli_does(exported, tmp_path, model, info):
    """export_onnx with no options gives what `qedge export` gives: frames dynamic; --fixed-time fixes them."""
    frames = onnx.load(str(exported)).graph.input[0].type.tensor_type.shape.dim[2]
    assert frames.dim_param == "frames" and not frames.dim_value
    fixed = export_onnx(model, info, tmp_path / "fixed.onnx", dynamic_time=False)
    assert onnx.load(str(fixed)).graph.input[0].type.tensor_type.shape.dim[2].dim_value == info.window_frames


def test_dynamic_time_matches_pytorch(tmp_path, model, info, real_features):
    path = export_onnx(model, info, tmp_path / "dyn.onnx")
    session = ort_session(path)
    longer = np.concatenate([real_features[:2], real_features[:2, :, :29]], axis=2)  # 80 frames
    got = session.run(["scores"], {"features": longer})[0]
    with torch.no_grad():
        ref = torch.softmax(model(torch.from_numpy(longer)), -1).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_multilabel_export_ends_in_sigmoid(tmp_path, model):
    info = model_info(model, _meta("multi-label"), lipschitz=False)
    path = export_onnx(model, info, tmp_path / "ml.onnx")
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops[-1] == "Sigmoid" and "Softmax" not in ops


def test_factor_hamilton_recovers_channel_scales():
    gen = torch.Generator().manual_seed(3)
    comps = torch.randn(4, 5, 3, 3, 3, generator=gen, dtype=torch.float64)
    kernel = hamilton_kernel(*comps.unbind(0)).numpy()
    scale = np.random.default_rng(3).uniform(0.2, 2.0, kernel.shape[0])
    fac = factor_hamilton(kernel * scale[:, None, None, None])
    assert fac is not None and fac.residual < 1e-6
    rebuilt = hamilton_kernel(*torch.from_numpy(fac.components.astype(np.float64)).unbind(0)).numpy()
    np.testing.assert_allclose(rebuilt * fac.scale[:, None, None, None], kernel * scale[:, None, None, None],
                               rtol=1e-5, atol=1e-6)
    assert factor_hamilton(kernel) is not None and factor_hamilton(kernel).scale is None
    noisy = kernel.copy()
    noisy[0, 5, 0, 0] += 0.5  # break the structure of one block
    assert factor_hamilton(noisy) is None
    assert factor_hamilton(np.ones((6, 8, 3, 3))) is None  # not multiples of 4


def test_compact_equals_folded_and_is_smaller(tmp_path, exported, model, real_features):
    path, report = compact_onnx(exported, tmp_path / "model.compact.onnx")
    # every quaternion layer (4 convs + fc1) is stored as components; the real head stays
    assert len(report.compacted) == 5 and len(report.skipped) == 1
    proto = onnx.load(str(path))
    check_standard_ops(proto)
    assert {"Neg", "Concat", "Mul"} <= {n.op_type for n in proto.graph.node}
    folded = ort_session(exported).run(["scores"], {"features": real_features})[0]
    packed = ort_session(path).run(["scores"], {"features": real_features})[0]
    assert np.abs(folded - packed).max() <= 1e-5 * np.abs(folded).max()
    ratio = exported.stat().st_size / path.stat().st_size
    assert 3.3 < ratio < 4.1, ratio  # ~4x: the real bn0/head and per-channel scales are not shared
    assert read_info(path) == read_info(exported)
    verify_onnx(path, model, real_features)


def test_compact_leaves_real_layers_alone(exported):
    proto = onnx.load(str(exported))
    for init in proto.graph.initializer:  # destroy every quaternion structure
        arr = numpy_helper.to_array(init)
        if arr.ndim >= 2:
            noise = np.random.default_rng(0).standard_normal(arr.shape).astype(arr.dtype)
            init.CopyFrom(numpy_helper.from_array(arr + noise, init.name))
    compacted, report = compact_model(proto)
    assert report.compacted == [] and report.floats_after == report.floats_before


# -- the command -------------------------------------------------------------------------------
def _qedge(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run ``qedge export ARGS`` in-process through the real entry point; (exit code, stdout, stderr)."""
    from qedge.cli import main

    monkeypatch.setattr(sys, "argv", ["qedge", "export", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    code = exit_info.value.code
    return (0 if code is None else int(code)), captured.out, captured.err


def _save(path: Path, model, meta: dict) -> Path:
    """qedge.checkpoint.save, avoiding a safetensors header length whose low byte is 0x80: the
    checkpoint sniffer currently mistakes such a file for a pickle (reported to its owner)."""
    from qedge.checkpoint import save

    save(path, model, meta)
    if path.read_bytes()[:1] == b"\x80":
        save(path, model, dict(meta, note="header padding"))
    return path


def test_cli_export_compact_and_missing_tensorrt(tmp_path, monkeypatch, capsys, model, fsdd_root):
    import json

    from qedge.checkpoint import save

    model_file = _save(tmp_path / "digits.qedge", model, _meta())
    out = tmp_path / "digits.onnx"
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on a machine without TensorRT
    code, stdout, stderr = _qedge(monkeypatch, capsys, str(model_file), "--out", str(out), "--verify-data",
                                  str(fsdd_root), "--verify-size", "4", "--compact", "--no-lipschitz",
                                  "--json", "--trt")
    assert code == 3, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("qedge: error")]
    assert len(errors) == 1 and "tensorrt" in errors[0] and "Traceback" not in stderr
    assert out.is_file() and (tmp_path / "digits.compact.onnx").is_file()  # written and verified first
    report = json.loads(stdout)
    assert report["onnx"]["verify"]["n"] == 4 and report["onnx"]["verify"]["top1_agreement"] == 1.0
    assert report["compact"]["ratio"] > 3.3 and report["trt_error"]["exit_code"] == 3
    assert read_info(out).labels == LABELS


def test_cli_bad_model_file_is_one_line(tmp_path, monkeypatch, capsys):
    bogus = tmp_path / "bogus.qedge"
    bogus.write_bytes(b"\x80\x04not a model at all")
    code, _, stderr = _qedge(monkeypatch, capsys, str(bogus))
    assert code != 0 and "Traceback" not in stderr
    assert stderr.strip().count("\n") == 0 and "bogus.qedge" in stderr
    code, _, stderr = _qedge(monkeypatch, capsys, str(bogus), "--fp16")
    assert code != 0 and "--trt" in stderr


def test_cli_int8_reports_accuracy_and_latency(tmp_path, monkeypatch, capsys, model, fsdd_root):
    import json

    from qedge.checkpoint import save

    meta = dict(_meta(), history=[{"step": "train", "data": str(fsdd_root)}])  # data found in the history
    model_file = _save(tmp_path / "digits.qedge", model, meta)
    code, stdout, stderr = _qedge(monkeypatch, capsys, str(model_file), "--int8", "--calib-size", "8",
                                  "--verify-size", "4", "--eval-size", "8", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["verify_source"].startswith("4 held-out clips")
    q = report["int8"]
    assert Path(q["path"]).name == "digits.int8.onnx" and Path(q["path"]).is_file()
    assert q["calibration_clips"] == 8 and q["eval_clips"] == 8 and q["qdq"]["nonzero_zero_points"] == 0
    assert 0.0 <= q["int8_accuracy"] <= 1.0 and 0.0 <= q["fp32_accuracy"] <= 1.0
    assert q["latency_ms"] > 0 and q["fp32_latency_ms"] > 0


def test_lipschitz_bound_in_metadata(model):
    import qedge.spectral as spectral
    meta = dict(_meta(), lipschitz=12.5)  # recorded in the model file: taken as is
    assert model_info(model, meta).lipschitz == 12.5
    info = model_info(model, _meta(), lipschitz=True)
    expected = spectral.lipschitz_report(model, (1, 4, 51, 64)).bound
    assert info.lipschitz == pytest.approx(expected) and info.lipschitz > 0
    assert float(info.to_props()["qedge.lipschitz"]) == pytest.approx(expected)


def test_compact_with_shared_zero_biases(tmp_path):
    """Default BatchNorm statistics fuse to all-zero biases, which the TorchScript exporter shares
    through Identity nodes: every quaternion layer must still be compacted."""
    torch.manual_seed(1)
    fresh = build("qcnn6", num_classes=len(LABELS), width=0.25).eval()
    info = model_info(fresh, _meta(), lipschitz=False)
    folded = export_onnx(fresh, info, tmp_path / "fresh.onnx")
    path, report = compact_onnx(folded, tmp_path / "fresh.compact.onnx")
    assert len(report.compacted) == 5 and report.skipped == ["inner.fc_audioset.weight"]
    x = np.random.default_rng(0).standard_normal((2, 4, 51, 64)).astype(np.float32) * 10
    a = ort_session(folded).run(["scores"], {"features": x})[0]
    b = ort_session(path).run(["scores"], {"features": x})[0]
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()


def test_ort_folds_the_compact_assembly_away(tmp_path, exported):
    """After ONNX Runtime's basic (load-time) optimisations the compact graph is the folded one:
    Neg/Concat constant-folded, the per-channel Mul/Add fused into the Conv."""
    import collections

    import onnxruntime as ort

    compact, _ = compact_onnx(exported, tmp_path / "c.onnx")
    counts = []
    for path in (exported, compact):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(tmp_path / (path.stem + ".opt.onnx"))
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
        counts.append(collections.Counter(n.op_type for n in graph.node))
    assert counts[0] == counts[1] and "Neg" not in counts[1] and "Mul" not in counts[1]
