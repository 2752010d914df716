"""The model record (qedge.meta): one held-out rule for evaluate, export, calibration and compress.

A model trained with ``--test-fold`` / ``--test-speaker`` must be scored, verified, calibrated and
fine-tuned on the split it was trained with, not on the dataset's default split.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from qedge.calib.select import held_out, select_calibration
from qedge.checkpoint import load, read_meta, save
from qedge.data import find_dataset
from qedge.errors import QedgeError
from qedge.meta import ModelRecord


def _with_held_out(meta: dict, data: str, **held) -> dict:
    """``meta`` as if trained on ``data`` holding out ``held`` (test_fold= or test_speaker=)."""
    meta = copy.deepcopy(meta)
    rec = next(h for h in meta["history"] if h.get("step") == "train")
    rec.update({"data": data, "test_fold": None, "test_speaker": None, **held})
    return meta


@pytest.fixture(scope="module")
def esc_meta(trained_qedge: Path) -> dict:
    return read_meta(trained_qedge)


def test_record_reads_the_training_split(esc_meta):
    rec = ModelRecord.from_meta(_with_held_out(esc_meta, "esc10", test_fold="2"))
    assert (rec.test_fold, rec.test_speaker, rec.train_seconds) == ("2", None, 1.28)
    assert rec.window_frames() == 501  # 5 s at hop 320 / 32 kHz, centred frames
    default = ModelRecord.from_meta(esc_meta)
    assert default.test_fold is None and default.held_out == "the dataset's default held-out split"


def test_evaluate_export_calibration_and_compress_hold_out_the_same_fold(esc_meta):
    from qedge.compress.pipeline import load_datasets
    from qedge.evaluate import _eval_dataset
    from qedge.export.pipeline import split_record

    meta = _with_held_out(esc_meta, "esc10", test_fold="2")
    record = ModelRecord.from_meta(meta)
    index = find_dataset("esc10")
    expected = sorted(c.id for c in index.clips if str(c.fold) == "2")
    assert len(expected) == 80

    evaluated = sorted(c.id for c in _eval_dataset(meta, index, "test", False).clips)
    compressed = load_datasets("esc10", None, meta)
    verified = sorted(c.id for c in held_out("esc10", record=split_record(meta, "esc10"))[0])
    calibration = select_calibration("esc10", 40, record=split_record(meta, "esc10"))

    assert evaluated == expected
    assert sorted(c.id for c in compressed.test.clips) == expected
    assert verified == expected
    assert not {c.id for c in calibration} & set(expected)  # calibration comes from the training folds
    assert not {c.id for c in compressed.train.clips} & set(expected)
    # the default rule (fold 4) is what the bug used: it is a different set
    assert sorted(c.id for c in index.split()[1].clips) != expected


def test_fsdd_speaker_held_out_everywhere(esc_meta, fsdd_root):
    from qedge.export.pipeline import split_record

    meta = _with_held_out(esc_meta, str(fsdd_root), test_speaker="george")
    record = ModelRecord.from_meta(meta)
    index = find_dataset(fsdd_root)
    _, test = record.test_split(index)
    assert {c.speaker for c in test.clips} == {"george"}
    assert {c.speaker for c in held_out(fsdd_root, 20, record=split_record(meta, str(fsdd_root)))[0]} == {"george"}
    assert "george" not in {c.speaker for c in select_calibration(fsdd_root, 30, record=record)}
    # other data than the model's is split by its own rule
    assert split_record(meta, "esc10") is None


def test_a_recorded_speaker_the_data_lacks_is_a_clear_error(esc_meta, fsdd_root):
    record = ModelRecord.from_meta(_with_held_out(esc_meta, "x", test_speaker="nobody"))
    with pytest.raises(QedgeError, match="holding out speaker nobody"):
        record.test_split(find_dataset(fsdd_root))


def test_qedge_evaluate_cli_scores_the_trained_split(esc_meta, trained_qedge, tmp_path):
    model, _ = load(trained_qedge)
    path = save(tmp_path / "fold2.qedge", model, _with_held_out(esc_meta, "esc10", test_fold="2"))
    proc = subprocess.run([sys.executable, "-m", "qedge", "evaluate", str(path), "--data", "esc10", "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["n"] == 80
    from qedge.data import ClipIndex
    from qedge.evaluate import evaluate

    index = find_dataset("esc10")
    fold = {k: evaluate(model, esc_meta, ClipIndex([c for c in index.clips if str(c.fold) == k],
                                                   index.labels, multilabel=False), split="all")["accuracy"]
            for k in ("2", "4")}
    assert fold["2"] != fold["4"]  # the two splits are told apart by the score
    assert result["accuracy"] == pytest.approx(fold["2"])


def test_labels_match_by_exact_name_in_export_as_in_evaluate(esc_meta):
    from qedge.data import ClipIndex
    from qedge.evaluate import _eval_dataset
    from qedge.export.pipeline import label_indices

    labels = esc_meta["labels"]
    assert list(label_indices(["Rain", "Dog bark"], labels)) == [labels.index("Rain"), labels.index("Dog bark")]
    assert label_indices(["dog_bark"], labels) is None
    clip = find_dataset("esc10").clips[0]
    renamed = ClipIndex([type(clip)(clip.path, ("dog_bark",), clip.fold)], ["dog_bark"])
    with pytest.raises(QedgeError, match="not in the model's vocabulary"):
        _eval_dataset(esc_meta, renamed, "all", False)


def test_validation_split_is_stable_stratified_and_keeps_recordings_together():
    """Epoch-selection clips: about a fifth of each label's source recordings, the same every
    time, no source recording (ESC ``FOLD-SOURCE-TAKE``) on both sides, none from the test fold."""
    index = find_dataset("esc10")
    train, test = index.split()
    fit, val = train.validation_split(0.2)
    again_fit, again_val = find_dataset("esc10").split()[0].validation_split(0.2)
    assert [c.id for c in val.clips] == [c.id for c in again_val.clips]
    assert len(fit) + len(val) == len(train) and not {c.id for c in fit.clips} & {c.id for c in val.clips}
    assert not {c.id for c in val.clips} & {c.id for c in test.clips}

    def source(c) -> str:
        return c.path.stem.rsplit("-", 1)[0]

    assert not {source(c) for c in fit.clips} & {source(c) for c in val.clips}
    assert all(n >= 1 for n in val.counts().values())
    assert 0.15 <= len(val) / len(train) <= 0.25
    assert len(train.validation_split(0.0)[1]) == 0
    with pytest.raises(QedgeError, match="validation fraction"):
        train.validation_split(1.0)
