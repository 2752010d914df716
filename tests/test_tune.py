"""Listen defaults chosen on data (`qedge tune`, :mod:`qedge.stream.tune`): the tuner replays kept
scores exactly as the listen loop decides, picks the window that scores best on the tuning
soundscape, and writes what it chose into the model file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qedge.data.background import BackgroundBank
from qedge.meta import ModelRecord
from qedge.runtime.features import FeatureConfig
from qedge.runtime.model_info import ListenSettings
from qedge.stream.score import listen_to, score_stream
from qedge.stream.soundscape import SoundscapeSpec, build_soundscape
from qedge.stream.tune import replay, tune_listen, window_candidates
from test_stream import OPEN_SET, SR, tone_clip, tone_detector_onnx

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tone_backend(tmp_path_factory):
    """The narrow-band tone detector of test_stream (max over the window of the tone's prominence)."""
    from qedge.runtime.backends import OrtBackend

    listen = ListenSettings(thresholds={"tone": 0.5}, background="background")
    return OrtBackend(tone_detector_onnx(tmp_path_factory.mktemp("tone") / "tone.onnx", listen))


@pytest.fixture(scope="module")
def tone_soundscape():
    """Short tones (0.4–0.6 s) on noise beds, quiet silence and noise between them."""
    clips = [(tone_clip(0.4 + 0.1 * (i % 3), 1.0), "tone") for i in range(9)]
    spec = SoundscapeSpec(bed_kinds=("noise",), quiet_kinds=("silence", "noise"), quiet_seconds=6.0,
                          events_per_quiet=3)
    return build_soundscape(clips, BackgroundBank.build(SR), seed=3, spec=spec)


def tone_record() -> ModelRecord:
    """A model record for the detector: trained on 2 s crops (201 frames)."""
    return ModelRecord(arch="tone", arch_kwargs={}, labels=["tone", "background"], task="single-label",
                       features=FeatureConfig().to_dict(), clip_seconds=2.0, train_seconds=2.0,
                       background_label="background")


def test_window_candidates_are_fractions_of_the_training_crop_with_their_hops():
    record = tone_record()
    assert record.crop_frames() == 201
    assert window_candidates(record, (1.0, 0.25, 0.5, 0.5)) == [(50, 12), (100, 25), (201, 25)]
    from qedge.errors import QedgeError

    with pytest.raises(QedgeError, match="fraction"):
        window_candidates(record, (1.5,))


def test_replayed_scores_decide_as_the_listen_loop(tone_backend, tone_soundscape):
    """Kept raw scores replayed with settings S give the tags and events the real loop reports with S."""
    raw = listen_to(tone_soundscape, tone_backend, keep_scores=True, threshold=1.0, smooth=1, window_s=0.5, hop_s=0.1)
    live = listen_to(tone_soundscape, tone_backend, threshold=0.6, smooth=2, window_s=0.5, hop_s=0.1)
    again = replay(raw, ListenSettings(thresholds={"tone": 0.6}, smooth=2, background="background"), ["tone", "background"])
    assert [w["tags"] for w in again.windows] == [w["tags"] for w in live.windows]
    assert again.events == live.events and len(live.events) >= len(tone_soundscape.events) - 1


def test_tuner_chooses_the_window_that_follows_short_events(tone_backend, tone_soundscape):
    """The detector keeps a tone tagged as long as the tone is anywhere in its window, so on 0.4–0.6 s
    tones the shortest window scores the best segment F1; the chosen settings, heard by the real
    loop, give the figures the tuner reported and no false alarm in the quiet stretches."""
    record = tone_record()
    settings, report = tune_listen(tone_backend, record, tone_soundscape, (0.25, 1.0))
    tried = {row["window_s"]: row for row in report["windows_tried"]}
    assert set(tried) == {0.5, 2.01}
    assert tried[0.5]["segment_f1"] > tried[2.01]["segment_f1"] + 0.05
    assert (settings.window_frames, settings.hop_frames) == (50, 12) and report["window"] == tried[0.5]
    assert 0.0 < settings.thresholds["tone"] < 1.0 and "window 0.5 s" in settings.chosen_on
    run = listen_to(tone_soundscape, tone_backend, threshold=settings.thresholds["tone"], smooth=settings.smooth,
                    window_s=0.5, hop_s=0.12)
    figures = score_stream([run], ["tone"])
    assert figures["segment_f1"] == pytest.approx(tried[0.5]["segment_f1"], abs=1e-3)
    assert all(v["count"] == 0 for v in figures["false_alarms"].values())


def _qedge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qedge", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=600)


def test_qedge_tune_writes_the_chosen_window_into_the_model_and_its_export(tmp_path):
    import json

    from qedge import checkpoint
    from qedge.checkpoint import read_meta
    from qedge.export.onnx import export_onnx, model_info

    before = OPEN_SET.read_bytes()
    out = tmp_path / "tuned.qedge"
    proc = _qedge("tune", str(OPEN_SET), "--per-label", "1", "--quiet-minutes", "0.2", "--windows", "0.5,1",
                  "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert OPEN_SET.read_bytes() == before  # --out: the original is left as it was
    meta = read_meta(out)
    record = ModelRecord.from_meta(meta)
    tried = meta["history"][-1]["listen_tuning"]["windows_tried"]
    assert [row["window_s"] for row in tried] == [0.64, 1.29]
    assert record.listen["window_frames"] in (64, 129) and record.listen == result["listen"]
    assert meta["history"][-1]["listen_tuning"]["by"] == "qedge tune"
    model, meta = checkpoint.load(out)
    info = model_info(model, meta)
    assert info.listen.window_frames == record.listen["window_frames"]
    assert info.listen.thresholds == record.listen["thresholds"]
    assert export_onnx(model, info, tmp_path / "tuned.onnx", dynamic_time=True).exists()


def test_qedge_tune_refuses_a_closed_set_model(trained_qedge):
    proc = _qedge("tune", str(trained_qedge), "--quiet-minutes", "0.1")
    assert proc.returncode != 0
    assert "not an open-set model" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
