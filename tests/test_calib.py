"""INT8 calibration (calib/): representative-set selection, the calibration reader, QDQ quantization
with symmetric int8 (zero points 0) and per-channel weights, and INT8 ≈ fp32 on real clips for a
small model trained here for a few seconds on three FSDD digits."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from qedge.calib.quantize import int8_path, qdq_summary, quantize_int8
from qedge.calib.reader import FeatureReader, features_array, window_samples
from qedge.calib.select import held_out, select_calibration, split_dataset, stratified
from qedge.runtime.features import FeatureConfig

DIGITS = ("0", "1", "2")
FRAMES = 51  # 0.5 s windows


def test_calib_modules_are_torch_free():
    code = ("import sys; import qedge.calib.select, qedge.calib.reader, qedge.calib.quantize; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_selection_is_stratified_deterministic_and_from_training(fsdd_root):
    picked = select_calibration(fsdd_root, 30, seed=0)
    assert len(picked) == 30
    assert set(Counter(c.labels[0] for c in picked).values()) == {3}  # 10 digits × 3
    assert [c.path for c in picked] == [c.path for c in select_calibration(fsdd_root, 30, seed=0)]
    assert [c.path for c in picked] != [c.path for c in select_calibration(fsdd_root, 30, seed=1)]
    _, test = split_dataset(fsdd_root)
    assert not {c.path for c in picked} & {c.path for c in test}  # never a held-out clip
    assert len(stratified(list(test)[:7], 50)) == 7  # asks for more than exist: all of them


def test_reader_yields_model_windows(fsdd_root):
    clips = select_calibration(fsdd_root, 4)
    config = FeatureConfig()
    assert window_samples(config, FRAMES) == 16000
    reader = FeatureReader(clips, config, FRAMES, cache_dir=False)
    first = [reader.get_next() for _ in range(5)]
    assert first[-1] is None and all(set(f) == {"features"} for f in first[:4])
    assert all(f["features"].shape == (1, 4, FRAMES, 64) and f["features"].dtype == np.float32 for f in first[:4])
    reader.rewind()
    again = reader.get_next()["features"]
    np.testing.assert_array_equal(again, first[0]["features"])
    direct = features_array([clips[0].path], config, FRAMES, cache_dir=False)  # a bare path works too
    np.testing.assert_allclose(direct[0], again[0], atol=1e-6)


# -- a small trained model, exported and quantized once -----------------------------------------
def _fit_readout(model, x: "torch.Tensor", y: np.ndarray, classes: int) -> None:
    """Closed-form "training": BatchNorm statistics from the data, then a ridge-regression read-out (fc_audioset) on the random QCNN's
    embeddings (centred, one common scale), targets ±1 one-hot, scaled ×4 so the softmax is
    confident. Seconds, deterministic."""
    import torch

    for module in model.modules():  # BatchNorm statistics of the data, as training would leave them
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    captured = []
    hook = model.fc_audioset.register_forward_hook(lambda mod, inp, out: captured.append(inp[0].detach()))
    with torch.no_grad():
        model(x)
    hook.remove()
    emb = captured[0].double().numpy()
    mu = emb.mean(0)
    sd = np.full(emb.shape[1], emb.std(0).mean() + 1e-9)  # one scale: no dimension is amplified
    z = np.c_[(emb - mu) / sd, np.ones(len(emb))]
    beta = 4 * np.linalg.solve(z.T @ z + np.eye(z.shape[1]), z.T @ (2 * np.eye(classes)[y] - 1))
    weight = beta[:-1].T / sd
    model.fc_audioset.weight.data = torch.tensor(weight, dtype=torch.float32)
    model.fc_audioset.bias.data = torch.tensor(beta[-1] - weight @ mu, dtype=torch.float32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fsdd_root):
    """QCNN6 (width 0.25) with a read-out fitted on 90 training clips of 3 digits; its fp32 ONNX,
    INT8 ONNX (calibrated on other training clips) and 45 held-out takes (FSDD's index-0–4 rule)."""
    import torch

    from qedge.export.onnx import export_onnx, model_info
    from qedge.models import build

    from qedge.data import find_dataset

    torch.manual_seed(0)
    train, test = find_dataset(fsdd_root).split(test_fold="test")  # same speakers, other takes
    label_of = {d: i for i, d in enumerate(DIGITS)}
    train_clips = stratified([c for c in train if c.labels[0] in DIGITS], 90, seed=0)
    test_clips = stratified([c for c in test if c.labels[0] in DIGITS], 45, seed=0)
    config = FeatureConfig()
    x_train = torch.from_numpy(features_array(train_clips, config, FRAMES))
    model = build("qcnn6", num_classes=3, width=0.25).eval()
    _fit_readout(model, x_train, np.array([label_of[c.labels[0]] for c in train_clips]), 3)
    meta = {"arch": "qcnn6", "arch_kwargs": model.arch_kwargs, "labels": list(DIGITS),
            "features": config.to_dict(), "clip_seconds": 0.5, "task": "single-label"}
    info = model_info(model, meta, lipschitz=False)
    folder = tmp_path_factory.mktemp("int8")
    fp32 = export_onnx(model, info, folder / "digits.onnx")
    calib = stratified([c for c in train if c.labels[0] in DIGITS], 24, seed=1)
    int8 = quantize_int8(fp32, int8_path(fp32), FeatureReader(calib, config, FRAMES))
    x_test = features_array(test_clips, config, FRAMES)
    y_test = np.array([label_of[c.labels[0]] for c in test_clips])
    return {"fp32": fp32, "int8": int8, "x": x_test, "y": y_test}


def test_int8_graph_is_symmetric_per_channel_qdq(trained):
    assert trained["int8"] == trained["fp32"].with_name("digits.int8.onnx")
    proto = onnx.load(str(trained["int8"]))
    onnx.checker.check_model(proto)
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    qdq = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    for node in qdq:  # every zero point is present, integer, and exactly 0
        zero_point = inits[node.input[2]]
        assert zero_point.dtype in (np.int8, np.int32) and not zero_point.any(), node.name
    layers = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm")]
    assert inits[layers[0].input[1]].dtype == np.float32  # the first conv stays fp32 (default)
    for conv in layers[1:]:
        weight_dq = next(n for n in proto.graph.node if n.output[0] == conv.input[1])
        assert weight_dq.op_type == "DequantizeLinear"
        q_weight, scale = inits[weight_dq.input[0]], inits[weight_dq.input[1]]
        assert q_weight.dtype == np.int8
        axis = next((a.i for a in weight_dq.attribute if a.name == "axis"), 1)
        assert scale.shape == (q_weight.shape[axis],) and scale.size > 1  # one scale per output channel
    summary = qdq_summary(proto)
    assert summary["nonzero_zero_points"] == 0 and summary["per_tensor_weights"] == 0
    assert summary["per_channel_weights"] == len(layers) - 1
    props = {p.key: p.value for p in proto.metadata_props}
    original = {p.key: p.value for p in onnx.load(str(trained["fp32"])).metadata_props}
    assert original.items() <= props.items() and props["qedge.quantization"].startswith("int8-qdq")
    assert [n.op_type for n in proto.graph.node][-1] == "Softmax"  # probabilities stay fp32


def test_int8_agrees_with_fp32_on_the_trained_model(trained_onnx, trained_qedge, tmp_path):
    """The committed trained ESC-10 model: INT8 calibrated on training-fold clips agrees with fp32
    on the held-out fold (top-1 and score deviation). Deterministic: same clips, same scales."""
    from qedge.calib.reader import features_array
    from qedge.checkpoint import read_meta
    from qedge.export.pipeline import evaluate_onnx, label_indices
    from qedge.meta import ModelRecord
    from qedge.runtime.model_info import ModelInfo

    record = ModelRecord.from_meta(read_meta(trained_qedge))
    info = ModelInfo.from_props({p.key: p.value for p in onnx.load(str(trained_onnx)).metadata_props})
    calib = select_calibration("esc10", 32, record=record)
    int8 = quantize_int8(trained_onnx, tmp_path / "esc10.int8.onnx", FeatureReader(calib, info.features, info.window_frames))
    clips, _ = held_out("esc10", 40, record=record)
    x = features_array(clips, info.features, info.window_frames)
    y = label_indices([c.labels[0] for c in clips], info.labels)
    ref, q = evaluate_onnx(trained_onnx, x, y), evaluate_onnx(int8, x, y)
    assert ref["accuracy"] >= 0.6  # the model did learn (chance is 0.1)
    agreement = float((ref["pred"] == q["pred"]).mean())
    assert agreement >= 0.9, agreement
    assert abs(ref["accuracy"] - q["accuracy"]) <= 0.1
    assert float(np.median(np.abs(ref["scores"] - q["scores"]).max(1))) < 0.05  # typical clip: close


def test_quantize_refuses_missing_file(tmp_path):
    from qedge.errors import QedgeError

    with pytest.raises(QedgeError, match="no such ONNX file"):
        quantize_int8(tmp_path / "nope.onnx", tmp_path / "nope.int8.onnx", FeatureReader.from_arrays(np.zeros((1, 4, 5, 8))))


def test_all_convs_int8_when_asked(trained, tmp_path):
    path = quantize_int8(trained["fp32"], tmp_path / "all.int8.onnx", FeatureReader.from_arrays(trained["x"][:8]),
                         first_conv_fp32=False)
    proto = onnx.load(str(path))
    first = next(n for n in proto.graph.node if n.op_type == "Conv")
    producer = next(n for n in proto.graph.node if first.input[1] in n.output)
    assert producer.op_type == "DequantizeLinear"
    assert {p.key: p.value for p in proto.metadata_props}["qedge.quantization"].endswith("/minmax")
