"""Live tagging on continuous audio: the background bank, soundscapes with known events, the stream
scorer (sed_eval), listen settings stored in the model, and the open-set model on real recordings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qedge.data.background import (BackgroundBank, MixBackground, colored_noise, rms_dbfs, scale_to_dbfs,
                                   sounding_span)
from qedge.runtime.features import FeatureConfig, LogMelDeltas
from qedge.runtime.model_info import ListenSettings, ModelInfo
from qedge.stream.score import StreamRun, listen_to, poisson_upper, score_stream
from qedge.stream.soundscape import Soundscape, SoundscapeSpec, build_soundscape

REPO = Path(__file__).resolve().parents[1]
SR = 32000
OPEN_SET = REPO / "tests" / "fixtures" / "esc10-qcnn6-openset.qedge"
TONE_HZ = 2000.0


# -- background bank ---------------------------------------------------------------------------
def test_colored_noise_has_the_asked_slope_and_level():
    rng = np.random.default_rng(0)
    for beta in (0.0, 1.0, 2.0):
        x = colored_noise(2**16, beta, rng)
        assert abs(rms_dbfs(x)) < 1e-6  # unit RMS
        f = np.fft.rfftfreq(x.size)
        p = np.abs(np.fft.rfft(x)) ** 2
        band = (f > 1e-3) & (f < 0.4)
        slope = np.polyfit(np.log10(f[band]), np.log10(p[band]), 1)[0]
        assert abs(slope + beta) < 0.1, (beta, slope)
    assert rms_dbfs(scale_to_dbfs(colored_noise(8000, 1.0, rng), -40.0)) == pytest.approx(-40.0, abs=1e-4)
    assert not np.any(scale_to_dbfs(np.zeros(100, np.float32), -20.0))


def test_sounding_span_finds_a_padded_event():
    wave = np.zeros(5 * SR, np.float32)
    wave[2 * SR: 2 * SR + 8000] = np.sin(2 * np.pi * 440 * np.arange(8000) / SR)
    a, b = sounding_span(wave)
    assert abs(a - 2 * SR) <= 320 and abs(b - (2 * SR + 8000)) <= 320
    assert sounding_span(np.zeros(1000, np.float32)) == (0, 0)


def test_mixing_sets_the_snr_over_the_sounding_part():
    import torch

    bank = BackgroundBank.build(SR)
    wave = np.zeros(2 * SR, np.float32)
    wave[SR: SR + 6400] = 0.5 * np.sin(2 * np.pi * 700 * np.arange(6400) / SR)
    mix = MixBackground(bank, snr_db=(10.0, 10.0), p=1.0)
    out = mix(wave, torch.Generator().manual_seed(3))
    bed = out - wave
    a, b = sounding_span(wave)
    snr = 10 * np.log10(np.mean(wave[a:b] ** 2) / np.mean(bed ** 2))
    assert snr == pytest.approx(10.0, abs=0.5)
    assert np.all(bed[:SR] != 0)  # the padding is now the bed, not digital silence


def test_event_crops_hold_the_event():
    """A 1.28 s crop of a dog-bark clip that is 92 % digital silence: with event_crops every crop
    holds sound; without, many crops are silent (what taught the closed-set model that silence
    is a sound)."""
    import torch

    from qedge.data import ClipDataset, find_dataset

    index = find_dataset("esc10")
    bark = index.subset([c for c in index.clips if c.labels == ("Dog bark",)][:1])
    silent = {}
    for crops in (False, True):
        ds = ClipDataset(bark, FeatureConfig(), clip_seconds=1.28, train=True, event_crops=crops, cache_dir=False)
        torch.manual_seed(0)
        wave = ds.loader.waveform(ds.clips[0])
        offsets = [int(torch.randint(*(lambda lo, hi: (lo, hi + 1))(*ds._crop_offsets(wave, ds.num_samples)), ()))
                   for _ in range(200)]
        silent[crops] = np.mean([not np.any(wave[o: o + ds.num_samples]) for o in offsets])
    assert silent[True] == 0.0 and silent[False] > 0.3


# -- soundscapes and the scorer ----------------------------------------------------------------
def tone_clip(seconds: float, pad: float) -> np.ndarray:
    n, p = int(seconds * SR), int(pad * SR)
    tone = 0.3 * np.sin(2 * np.pi * TONE_HZ * np.arange(n) / SR).astype(np.float32)
    return np.concatenate([np.zeros(p, np.float32), tone, np.zeros(p, np.float32)])


def test_soundscape_is_seeded_and_its_truth_holds_the_events():
    bank = BackgroundBank.build(SR)
    clips = [(tone_clip(0.6 + 0.1 * i, 1.0), "tone") for i in range(6)]
    spec = SoundscapeSpec(snr_db=10.0, bed_kinds=("noise",), quiet_kinds=("silence", "noise"), quiet_seconds=3.0,
                          events_per_quiet=2)
    a = build_soundscape(clips, bank, seed=5, spec=spec)
    b = build_soundscape(clips, bank, seed=5, spec=spec)
    c = build_soundscape(clips, bank, seed=6, spec=spec)
    assert np.array_equal(a.audio, b.audio) and a.events == b.events
    assert not np.array_equal(a.audio[: min(a.audio.size, c.audio.size)], c.audio[: min(a.audio.size, c.audio.size)])
    assert len(a.events) == 6 and len(a.quiet) == 3
    assert sorted(round(e - s, 2) for s, e, _ in a.events) == pytest.approx([0.6, 0.7, 0.8, 0.9, 1.0, 1.1], abs=0.02)
    for onset, offset, _ in a.events:  # the event (its sounding part) sits at 10 dB over the bed under it
        i, j = int(round(onset * SR)), int(round(offset * SR))
        tone = 0.3 * np.sin(2 * np.pi * TONE_HZ * np.arange(j - i) / SR)
        bed = a.audio[i:j] - tone
        assert 10 * np.log10(np.mean(tone ** 2) / np.mean(bed ** 2)) == pytest.approx(10.0, abs=0.01)
        assert np.any(a.audio[i - 800: i])  # the clip's zero padding was cut: the bed is there
    for start, end, kind in a.quiet:
        seg = a.audio[int(start * SR): int(end * SR)]
        assert (kind == "silence") == (rms_dbfs(seg) < -65)


def tone_detector_onnx(path: Path, listen: ListenSettings) -> Path:
    """ONNX scoring [tone, background]: p = sigmoid(0.5·(prominence − 12 dB)), prominence = max over
    time of max(ψ, −60 dB) at the tone's mel bin minus the mean of the bins 4 away (a narrow-band
    detector)."""
    import onnx
    import torch
    from torch import nn

    cfg = FeatureConfig()
    t = np.arange(SR) / SR
    psi = LogMelDeltas(cfg).compute((0.3 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32))[0]
    b = int(np.argmax(psi.mean(axis=0)))

    class Tone(nn.Module):
        def forward(self, x):
            p = x[:, 0].clamp(min=-60.0)  # near-silence (−100 dBFS noise) sits at the log floor
            prom = (p[:, :, b] - 0.5 * (p[:, :, b - 4] + p[:, :, b + 4])).amax(dim=1)
            s = torch.sigmoid(0.5 * (prom - 12.0))
            return torch.stack([s, 1 - s], dim=1)

    torch.onnx.export(Tone().eval(), (torch.zeros(1, 4, 50, 64),), str(path), input_names=["features"],
                      output_names=["scores"], dynamic_axes={"features": {0: "batch", 2: "frames"}, "scores": {0: "batch"}},
                      opset_version=17, dynamo=False)
    model = onnx.load(str(path))
    info = ModelInfo(labels=["tone", "background"], features=cfg.to_dict(), arch={"name": "tone", "kwargs": {}},
                     macs=1, params=0, window_frames=50, listen=listen)
    for key, value in info.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def test_listen_loop_recovers_known_onsets_and_scores_them(tmp_path):
    """Soundscape → the real listen loop (file source) with the thresholds stored in the model →
    sed_eval: every tone found, onsets within a window, no false alarm on silence or noise."""
    from qedge.runtime.backends import OrtBackend

    listen = ListenSettings(window_frames=50, hop_frames=10, thresholds={"tone": 0.5}, background="background")
    backend = OrtBackend(tone_detector_onnx(tmp_path / "tone.onnx", listen))
    bank = BackgroundBank.build(SR)
    clips = [(tone_clip(0.8 + 0.2 * (i % 3), 1.5), "tone") for i in range(6)]
    sc = build_soundscape(clips, bank, seed=1, spec=SoundscapeSpec(bed_kinds=("noise",), quiet_kinds=("silence", "noise"),
                                                                   quiet_seconds=6.0, events_per_quiet=2))
    run = listen_to(sc, backend)
    assert run.summary["window_s"] == pytest.approx(0.5) and run.summary["hop_s"] == pytest.approx(0.1)
    assert all(t["label"] != "background" for w in run.windows for t in w["tags"])
    assert len(run.events) == len(sc.events)
    for ev, (onset, offset, _) in zip(sorted(run.events, key=lambda e: e["onset"]), sc.events):
        assert abs(ev["onset"] - onset) <= 0.5 and abs(ev["offset"] - offset) <= 0.6
    report = score_stream([run], ["tone"])
    assert report["event_recall"] == 1.0 and report["event_f1"] == 1.0
    assert report["segment_f1"] > 0.8
    assert all(v["count"] == 0 for v in report["false_alarms"].values())
    assert report["onset_latency_s"]["median"] <= 0.5


def test_scorer_counts_false_alarms_per_kind_and_bounds_them():
    sc = Soundscape(np.zeros(SR * 60, np.float32), SR, events=[(5.0, 7.0, "a")],
                    quiet=[(10.0, 30.0, "silence"), (30.0, 60.0, "speech")])
    windows = [{"t": float(t), "tags": [{"label": "a", "score": 0.9}] if 5.5 <= t <= 8 else []}
               for t in np.arange(1.0, 60.0, 0.25)]
    events = [{"event": "a", "onset": 5.25, "offset": 8.0, "score": 0.9},
              {"event": "a", "onset": 40.0, "offset": 41.0, "score": 0.7},  # in speech: a false alarm
              {"event": "a", "onset": 10.0, "offset": 10.5, "score": 0.6},  # within a window of the start: not
              {"event": "b", "onset": 8.0, "offset": 25.0, "score": 0.6}]  # stuck on into the silence: one
    report = score_stream([StreamRun(sc, windows, events, {"window_s": 1.0, "hop_s": 0.25})], ["a", "b"])
    assert report["false_alarms"]["speech"]["count"] == 1 and report["false_alarms"]["silence"]["count"] == 1
    assert report["false_alarms"]["speech"]["hours"] == pytest.approx(29 / 3600, abs=1e-4)
    assert report["event_recall"] == 1.0 and report["onset_latency_s"]["median"] == pytest.approx(0.5)
    assert report["event_f1_precision"] == pytest.approx(1 / 4)
    assert poisson_upper(0, 1.0) == pytest.approx(2.9957, abs=1e-3)


# -- listen settings in the model --------------------------------------------------------------
def test_listen_settings_travel_in_onnx_metadata_and_drive_the_listener(tmp_path):
    from qedge.runtime.backends import OrtBackend
    from qedge.runtime.listen import Listener

    listen = ListenSettings(window_frames=50, hop_frames=10, thresholds={"tone": 0.7}, smooth=2, off_ratio=0.4,
                            background="background", chosen_on="test")
    backend = OrtBackend(tone_detector_onnx(tmp_path / "tone.onnx", listen))
    assert backend.info.listen == listen
    tagger = Listener(backend)
    assert (tagger.window_frames, tagger.hop_frames, tagger.smooth) == (50, 10, 2)
    assert tagger.thresholds.tolist() == [0.7, float("inf")]
    assert tagger.off_thresholds[0] == pytest.approx(0.28)
    flags = Listener(backend, threshold=0.3, smooth=1, hop_s=0.2)
    assert flags.thresholds.tolist() == [0.3, float("inf")] and flags.smooth == 1 and flags.hop_frames == 20


def test_trained_model_records_its_listen_window(trained_qedge):
    """A model without tuned settings listens on its training crop (1.28 s → 129 frames) with a
    0.25 s hop, not its 5 s scoring window."""
    from qedge.checkpoint import read_meta
    from qedge.meta import ModelRecord

    settings = ModelRecord.from_meta(read_meta(trained_qedge)).listen_settings()
    assert (settings.window_frames, settings.hop_frames) == (129, 25)


# -- the open-set model on real recordings -----------------------------------------------------
def event_free_inputs(folder: Path) -> dict[str, Path]:
    """The three inputs of issue #13's table (:func:`qedge.stream.sets.event_free_inputs`) as files."""
    from qedge.stream.sets import event_free_inputs as waves

    paths = {}
    for name, wave in waves(SR).items():
        paths[name] = folder / f"{name}.wav"
        sf.write(paths[name], wave, SR, subtype="FLOAT")
    return paths


@pytest.fixture(scope="module")
def open_set_onnx(tmp_path_factory) -> Path:
    from qedge import checkpoint
    from qedge.export.onnx import export_onnx, model_info

    model, meta = checkpoint.load(OPEN_SET)
    return export_onnx(model, model_info(model, meta), tmp_path_factory.mktemp("openset") / "openset.onnx",
                       dynamic_time=True)


def listen_tags(onnx: Path, wav: Path) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "qedge", "listen", str(onnx), "--file", str(wav), "--fast", "--json",
                           "--threads", "1"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    return [t["label"] for x in lines if "tags" in x for t in x["tags"]]


def test_open_set_model_says_nothing_on_silence_noise_and_speech(open_set_onnx, trained_onnx, tmp_path):
    """With its stored defaults the open-set model tags nothing in 20 s of each; the closed-set
    model of the same recipe tags something in every one (the bug of issue #13)."""
    inputs = event_free_inputs(tmp_path)
    for name, wav in inputs.items():
        assert listen_tags(open_set_onnx, wav) == [], name
        assert listen_tags(trained_onnx, wav), name


def stream_figures(model: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "qedge", "evaluate", str(model), "--data", "esc10", "--stream",
                           "--quiet-minutes", "0.25", "--json"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_stream_evaluation_of_the_exported_onnx_matches_the_model_file(open_set_onnx):
    """`qedge evaluate --stream` on the deployed ONNX (ONNX Runtime, held-out fold and listen defaults
    from its metadata) scores the same soundscape as on the .qedge (PyTorch): same events found."""
    torch_run, ort_run = stream_figures(OPEN_SET), stream_figures(open_set_onnx)
    assert ort_run["held_out"] == torch_run["held_out"]  # fold 4, ESC-10's default: the fixture records none
    assert ort_run["events"] == torch_run["events"] == 80
    assert ort_run["soundscape_seconds"] == torch_run["soundscape_seconds"]
    assert ort_run["window_s"] == torch_run["window_s"] and ort_run["hop_s"] == torch_run["hop_s"]
    assert ort_run["event_recall"] == pytest.approx(torch_run["event_recall"], abs=1.5 / 80)
    assert ort_run["segment_f1"] == pytest.approx(torch_run["segment_f1"], abs=0.02)
    assert 0.2 < ort_run["event_recall"] <= 1.0


def test_open_set_model_file_holds_tuned_thresholds():
    from qedge.checkpoint import read_meta
    from qedge.meta import ModelRecord

    record = ModelRecord.from_meta(read_meta(OPEN_SET))
    settings = record.listen_settings()
    assert record.labels[-1] == "background" and settings.background == "background"
    assert set(settings.thresholds) == set(record.labels[:-1])
    assert all(0.0 < v < 1.0 for v in settings.thresholds.values()) and settings.chosen_on


def test_fine_tuning_an_open_set_model_keeps_its_open_set():
    """`qedge compress` fine-tunes on the data the model was trained on: an open-set model's
    training half keeps its background mixing and its event-free items (labelled background),
    or fine-tuning would teach it to forget "nothing"."""
    import torch
    from torch.utils.data import ConcatDataset

    from qedge.checkpoint import read_meta
    from qedge.compress.pipeline import load_datasets

    meta = read_meta(OPEN_SET)
    data = load_datasets("esc10", None, meta)
    assert isinstance(data.train, ConcatDataset)
    clips, negatives = data.train.datasets
    assert len(clips) == 240 and len(negatives) == meta["history"][-1]["background_items"] == 120
    assert any(isinstance(t, MixBackground) for t in clips._wave_aug.transforms) and clips.event_crops
    torch.manual_seed(0)
    x, y = negatives[0]
    assert int(y) == meta["labels"].index("background") and tuple(x.shape) == tuple(clips[0][0].shape)
    assert len(data.test) == 80  # the held-out fold, without negatives
