"""``qedge compress`` end to end on a tiny generated dataset (prune, fine-tune, KD, grid, report)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from qedge.checkpoint import load, save
from qedge.cli import app
from qedge.errors import QedgeError
from qedge.models import build

FEATURES = {"sample_rate": 8000, "n_fft": 256, "hop_length": 80, "n_mels": 32, "fmin": 20.0, "fmax": 4000.0,
            "delta_width": 9}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """A 2-class folder dataset of noisy tones (0.5 s, 8 kHz) and an untrained QCNN6 for it."""
    root = tmp_path_factory.mktemp("compress_cli")
    rng = np.random.default_rng(0)
    t = np.arange(4000) / 8000.0
    for label, freq in (("high", 2500.0), ("low", 300.0)):
        (root / "data" / label).mkdir(parents=True)
        for i in range(10):
            wave = 0.5 * np.sin(2 * np.pi * freq * (1 + 0.02 * i) * t) + 0.05 * rng.standard_normal(t.size)
            sf.write(root / "data" / label / f"{label}{i}.wav", wave.astype(np.float32), 8000)
    torch.manual_seed(0)
    model = build("qcnn6", 2, width=0.125, n_mels=32)
    meta = {"labels": ["high", "low"], "features": FEATURES, "clip_seconds": 0.5, "task": "single-label",
            "history": [{"step": "train", "test_fold": None, "test_speaker": None, "train_seconds": 0.5}]}
    return root / "data", save(root / "base.qedge", model, meta)


def test_compress_cli_grid_with_kd_report_and_baseline(tiny, tmp_path, monkeypatch) -> None:
    data, base = tiny
    monkeypatch.setenv("QEDGE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "pruned.qedge"
    result = CliRunner().invoke(app, [
        "compress", str(base), "--data", str(data), "--methods", "opnorm", "--method", "opnorm",
        "--ratio", "0.5", "--sweep", "0.5", "--layers", "all", "--kd-compare", "--finetune-epochs", "1",
        "--batch-size", "4", "--device", "cpu", "--kd-baseline-epochs", "1",
        "--report-dir", str(tmp_path / "rep"), "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    model, meta = load(out)
    entry = meta["history"][-1]
    assert entry["step"] == "compress" and entry["method"] == "opnorm" and entry["ratio"] == 0.5
    assert not entry["kd"]  # --out holds the run without KD; the KD twin goes to the report folder
    assert entry["params_after"] < entry["params_before"] and entry["macs_after"] < entry["macs_before"]
    assert len(entry["epochs"]) == 1 and entry["finetune_seconds"] > 0
    assert {"before", "after_pruning", "after"} <= set(entry)
    assert meta["history"][0]["step"] == "train"  # the training record is kept
    assert model.conv_block1.conv1.out_channels == 4  # width 0.125: 2 quaternions → 1 kept
    assert model(torch.zeros(1, 4, 51, 32)).shape == (1, 2)
    other, other_meta = load(tmp_path / "rep" / "pruned-opnorm-p0.5-kd.qedge")
    assert other_meta["history"][-1]["kd"] and other_meta["history"][-1]["kd_temperature"] == 2.0
    assert other.conv_block4.conv1.out_channels == model.conv_block4.conv1.out_channels
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    names = [r["name"] for r in report["runs"]]
    assert names[:3] == ["unpruned", "opnorm-p0.5", "opnorm-p0.5-kd"] and names[3].startswith("kd-student-w")
    assert all(r["latency_ms"] > 0 for r in report["runs"])
    assert (tmp_path / "rep" / "report.png").stat().st_size > 1000


@pytest.mark.parametrize("args,message", [
    (["--method", "taylor"], "unknown pruning criterion"),
    (["--round-to", "6"], "multiple of 4"),
    (["--sweep", "0.5,1.5"], "ratio"),
    (["--layers", "conv_block9.conv1"], "not a prunable layer"),
])
def test_compress_cli_rejects_bad_options(tiny, tmp_path, args, message) -> None:
    data, base = tiny
    result = CliRunner().invoke(app, ["compress", str(base), "--data", str(data), "--out",
                                      str(tmp_path / "x.qedge"), *args])
    assert isinstance(result.exception, QedgeError) and message in str(result.exception)


def test_compress_cli_random_criterion_is_reproducible(tiny, tmp_path, monkeypatch) -> None:
    """--method random (the floor criteria are judged against) prunes the same filters every run."""
    data, base = tiny
    monkeypatch.setenv("QEDGE_CACHE", str(tmp_path / "cache"))
    removed = []
    for run in ("a", "b"):
        out = tmp_path / f"random-{run}.qedge"
        result = CliRunner().invoke(app, ["compress", str(base), "--data", str(data), "--method", "random",
                                          "--layers", "all", "--finetune-epochs", "0", "--device", "cpu",
                                          "--seed", str(len(removed)), "--out", str(out)])
        assert result.exit_code == 0, result.output + repr(result.exception)
        entry = load(out)[1]["history"][-1]
        assert entry["method"] == "random" and entry["params_after"] < entry["params_before"]
        removed.append([g["removed"] for g in entry["pruned"]["groups"]])
    assert removed[0] == removed[1]


def test_compress_cli_prunes_a_real_model_at_channel_granularity(tiny, tmp_path, monkeypatch) -> None:
    """A real CNN6 (the MCCNN baseline) compresses like a quaternion one: fewer real channels, same I/O."""
    data, _ = tiny
    monkeypatch.setenv("QEDGE_CACHE", str(tmp_path / "cache"))
    teacher = build("cnn6", 2, width=0.125, n_mels=32)
    real = save(tmp_path / "real.qedge", teacher,
                {"labels": ["high", "low"], "features": FEATURES, "clip_seconds": 0.5, "task": "single-label"})
    out = tmp_path / "real-pruned.qedge"
    result = CliRunner().invoke(app, ["compress", str(real), "--data", str(data), "--ratio", "0.5", "--layers", "all",
                                      "--finetune-epochs", "0", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    model, meta = load(out)
    entry = meta["history"][-1]
    assert entry["params_after"] < entry["params_before"]
    assert model.conv_block4.conv1.out_channels < teacher.conv_block4.conv1.out_channels
    assert model(torch.zeros(1, 4, 51, 32)).shape == (1, 2)


def test_compress_cli_fine_tunes_with_spectral_clipping(tiny, tmp_path, monkeypatch) -> None:
    """--clip-sv C --clip-every K during fine-tuning leaves every quaternion conv with σ_max ≤ C."""
    from qedge.nn import QuaternionConv2d
    from qedge.spectral import input_sizes, padded_grid, spectral_norm

    data, base = tiny
    monkeypatch.setenv("QEDGE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "clipped.qedge"
    result = CliRunner().invoke(app, [
        "compress", str(base), "--data", str(data), "--ratio", "0.5", "--layers", "all", "--finetune-epochs", "1",
        "--batch-size", "4", "--device", "cpu", "--clip-sv", "0.5", "--clip-every", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    model, meta = load(out)
    assert meta["history"][-1]["finetune_config"]["clip_sv"] == 0.5
    sizes = input_sizes(model, (1, 4, 51, 32))
    for name, layer in model.named_modules():
        if isinstance(layer, QuaternionConv2d):
            grid = padded_grid(sizes[name], layer.kernel_size, layer.dilation)  # the grid clipping bounds
            assert spectral_norm(layer, grid) <= 0.5 * (1 + 1e-3), name


def test_fine_tuning_reuses_the_training_augmentations(tiny, tmp_path, monkeypatch) -> None:
    """Fine-tuning draws its training items like the model's training run did: with the recorded
    trim and gain the same clip differs from draw to draw; with none recorded it does not."""
    from qedge.compress.pipeline import load_datasets

    data, base = tiny
    monkeypatch.setenv("QEDGE_CACHE", str(tmp_path / "cache"))
    _, meta = load(base)

    def two_draws(record: dict) -> tuple[np.ndarray, np.ndarray]:
        train = load_datasets(str(data), None, {**meta, "history": [{**meta["history"][0], **record}]}).train
        torch.manual_seed(0)
        first = train.features(0)
        torch.manual_seed(1)
        return first, train.features(0)

    a, b = two_draws({"trim": 0.3, "gain_db": [-6.0, 6.0]})
    assert not np.allclose(a, b)
    a, b = two_draws({})
    np.testing.assert_array_equal(a, b)
    recorded = {"trim": 0.3, "endpoint": 0.5, "gain_db": [-6.0, 6.0]}
    train = load_datasets(str(data), None, {**meta, "history": [{**meta["history"][0], **recorded}]}).train
    kinds = [type(t).__name__ for t in train._wave_aug.transforms]
    assert kinds == ["RandomTrim", "RandomEndpoint", "RandomGain"]
    assert train._wave_aug.transforms[1].frame == meta["features"]["sample_rate"] // 100  # 10 ms frames
