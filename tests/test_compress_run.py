"""The library side of ``qedge compress``: the pruning-criteria registry (qedge.compress.scores) and
:func:`qedge.compress.run.compress_model` (grid + KD-only baseline) on a tiny generated FSDD set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from qedge.checkpoint import load
from qedge.compress import scores
from qedge.compress.prune import prune
from qedge.compress.scores import IMPORTANCES, filter_scores, importance, random_scores, register_importance
from qedge.errors import QedgeError
from qedge.meta import ModelRecord
from qedge.models import build
from qedge.nn import QuaternionConv2d

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FEATURES = {"sample_rate": 8000, "n_fft": 256, "hop_length": 80, "n_mels": 32, "fmin": 20.0, "fmax": 4000.0,
            "delta_width": 9}


def _conv(filters: int = 8, seed: int = 0) -> QuaternionConv2d:
    torch.manual_seed(seed)
    return QuaternionConv2d(12, 4 * filters, 3, bias=False)


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------
def test_registry_holds_the_builtin_criteria_and_methods_follows_it() -> None:
    assert scores.METHODS[:5] == ("opnorm", "l1", "gm", "spectral", "random")
    assert scores.METHODS == tuple(IMPORTANCES)
    assert importance("l1") is scores.l1_scores and importance("random") is random_scores
    layer = _conv()
    torch.testing.assert_close(filter_scores(layer, "l1"), scores.l1_scores(layer))
    with pytest.raises(QedgeError, match="already registered"):
        register_importance("l1")(lambda layer, size: torch.zeros(layer.weight.shape[1]))


@pytest.mark.parametrize("call", [
    lambda: importance("taylor"),
    lambda: filter_scores(_conv(), "taylor"),
    lambda: prune(build("qcnn6", 2, width=0.125, n_mels=32), method="taylor"),
])
def test_unknown_criterion_is_one_line_error(call) -> None:
    with pytest.raises(QedgeError) as info:
        call()
    message = str(info.value)
    assert message.startswith("unknown pruning criterion 'taylor' (choose from opnorm, l1, gm, spectral, random")
    assert "\n" not in message


def test_user_registered_criterion_drives_pruning() -> None:
    """A criterion added from outside is used by prune(): it removes the filters it scores lowest."""
    seen: list[tuple[int, ...] | None] = []

    def high_index_first(layer, input_size):  # filter f scores −f: the LAST filters are pruned
        seen.append(None if input_size is None else tuple(input_size))
        return -torch.arange(layer.weight.shape[1], dtype=torch.float64)

    register_importance("test-high-index-first")(high_index_first)
    try:
        assert "test-high-index-first" in scores.METHODS
        from qedge.compress.run import check_options

        check_options(["test-high-index-first"], [0.5], data="fsdd", out=Path("x.qedge"))  # the CLI's check
        torch.manual_seed(0)
        model = build("qcnn6", 2, width=0.25, n_mels=32).eval()
        pruned = prune(model, "test-high-index-first", 0.5, layers=["conv_block2.conv1"],
                       example_input=torch.zeros(1, 4, 51, 32))
        (group,) = pruned.pruning["groups"]
        filters = group["filters_before"]
        assert group["removed"] == list(range(filters - filters // 2, filters))
        kept = list(range(filters - filters // 2))
        torch.testing.assert_close(pruned.conv_block2.conv1.weight, model.conv_block2.conv1.weight[:, kept])
        assert pruned.pruning["method"] == "test-high-index-first"
        assert seen and seen[0] is not None and len(seen[0]) == 2  # handed the traced input size (H, W)
    finally:
        IMPORTANCES.pop("test-high-index-first", None)
        scores.METHODS = tuple(IMPORTANCES)
    with pytest.raises(QedgeError, match="unknown pruning criterion"):
        filter_scores(_conv(), "test-high-index-first")


def test_a_criterion_must_score_every_filter() -> None:
    register_importance("test-short")(lambda layer, size: torch.zeros(2))
    try:
        with pytest.raises(QedgeError, match="returned 2 scores for 8"):
            filter_scores(_conv(8), "test-short")
    finally:
        IMPORTANCES.pop("test-short", None)
        scores.METHODS = tuple(IMPORTANCES)


def test_random_criterion_is_reproducible_and_not_l1() -> None:
    layer = _conv(16, seed=0)
    with torch.no_grad():  # filter f has magnitude ∝ f + 1: ℓ1 ranks them 0, 1, …, 15
        layer.weight.copy_(torch.arange(1, 17, dtype=torch.float32).view(1, 16, 1, 1, 1)
                           * layer.weight.sign())
    first = filter_scores(layer, "random")
    torch.manual_seed(123)  # the global RNG plays no part
    torch.testing.assert_close(filter_scores(layer, "random"), first)
    torch.testing.assert_close(filter_scores(_conv(16, seed=5), "random"), first)  # nor do the weights
    assert first.dtype == torch.float64 and first.shape == (16,)
    assert not torch.equal(torch.argsort(first), torch.argsort(filter_scores(layer, "l1")))
    assert not torch.equal(random_scores(layer, seed=1), first)
    model = build("qcnn6", 2, width=0.25, n_mels=32).eval()
    example = torch.zeros(1, 4, 51, 32)
    removed = [prune(model, "random", 0.5, "all", example).pruning["groups"] for _ in range(2)]
    assert removed[0] == removed[1]
    assert removed[0] != prune(model, "l1", 0.5, "all", example).pruning["groups"]


# ---------------------------------------------------------------------------------------------
# compress_model
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fsdd_tiny(tmp_path_factory) -> Path:
    """An FSDD-layout set: digits 0/1 as noisy tones, speakers alice/bob/carol (default held out:
    carol, the last), 0.5 s at 8 kHz."""
    root = tmp_path_factory.mktemp("fsdd_tiny") / "recordings"
    root.mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(4000) / 8000.0
    for digit, freq in (("0", 300.0), ("1", 2500.0)):
        for speaker in ("alice", "bob", "carol"):
            for i in range(4):
                wave = 0.5 * np.sin(2 * np.pi * freq * (1 + 0.02 * i) * t) + 0.05 * rng.standard_normal(t.size)
                sf.write(root / f"{digit}_{speaker}_{i}.wav", wave.astype(np.float32), 8000)
    return root.parent


def test_kd_student_keeps_the_teachers_history_and_held_out_speaker(fsdd_tiny, tmp_path, monkeypatch) -> None:
    from qedge.compress.pipeline import load_datasets
    from qedge.compress.run import compress_model, write_compress_report

    monkeypatch.setenv("QEDGE_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    teacher = build("qcnn6", 2, width=0.125, n_mels=32)
    trained = {"step": "train", "test_fold": None, "test_speaker": "alice", "train_seconds": 0.5}
    meta = {"arch": "qcnn6", "labels": ["0", "1"], "features": FEATURES, "clip_seconds": 0.5,
            "task": "single-label", "history": [trained]}
    assert ModelRecord.from_meta(meta).held_out == "speaker alice"
    messages: list[str] = []
    result = compress_model(teacher, meta, str(fsdd_tiny), "fsdd", out=tmp_path / "small.qedge",
                            criteria=["l1"], ratios=[0.5], layers="all", finetune_epochs=0, batch_size=4,
                            kd_baseline_epochs=1, device="cpu", log=messages.append)
    names = [r["name"] for r in result.rows]
    assert names[:2] == ["unpruned", "l1-p0.5"] and names[2].startswith("kd-student-w") and len(names) == 3
    assert result.primary == "l1-p0.5" and result.paths["l1-p0.5"] == tmp_path / "small.qedge"
    assert result.metric == "accuracy" and 0.0 <= result.base_metric <= 1.0
    assert messages[0].startswith("unpruned qcnn6: accuracy") and "8 held-out clips" in messages[0]
    for name in names[1:]:
        _, saved = load(result.paths[name])
        assert saved["history"][0] == trained, name  # the training record survives
        assert ModelRecord.from_meta(saved).held_out == "speaker alice", name
        test = load_datasets(str(fsdd_tiny), "fsdd", saved).test
        assert {c.speaker for c in test.clips} == {"alice"}, name
    _, student = load(result.paths[names[2]])
    assert len(student["history"]) == 2 and student["history"][-1]["step"] == "kd-baseline"
    assert student["history"][-1]["teacher_arch"] == "qcnn6" and len(student["history"][-1]["epochs"]) == 1
    assert student["arch_kwargs"]["width"] < 0.125
    paths = write_compress_report(result, tmp_path / "rep")
    assert "qedge compress: qcnn6 on" in paths["md"].read_text() and paths["png"].stat().st_size > 1000


@pytest.mark.parametrize("kwargs,message", [
    ({"criteria": ["taylor"]}, "unknown pruning criterion"),
    ({"ratios": [1.0]}, "ratio"),
    ({"round_to": 6}, "multiple of 4"),
    ({"out": Path("x.onnx")}, ".qedge"),
    ({"lr": 0.0}, "positive"),
    ({"clip_sv": -1.0}, "positive"),
    ({"layers": "conv_block9.conv1"}, "not a prunable layer"),
])
def test_compress_model_refuses_bad_settings_before_any_work(kwargs, message, tmp_path) -> None:
    from qedge.compress.run import compress_model

    teacher = build("qcnn6", 2, width=0.125, n_mels=32)
    meta = {"arch": "qcnn6", "labels": ["0", "1"], "features": FEATURES, "clip_seconds": 0.5, "history": []}
    kwargs = {"out": tmp_path / "x.qedge", **kwargs}
    with pytest.raises(QedgeError, match=message):  # the data path does not exist: never read
        compress_model(teacher, meta, str(tmp_path / "missing"), "fsdd", **kwargs)
