"""Front end: FeatureConfig, mel filterbank, SG derivatives, offline/streaming features.

Reference: librosa (stft + filters.mel + power_to_db + feature.delta), run in float64.
Tolerances: log-mel ≤ 1e-4 dB absolute (float32 output of values up to ~±100 dB); derivatives
≤ 1e-4 · max(1, max|Δ_ref|) absolute, i.e. 1e-4 relative to the derivative's scale on the clip.
Streaming against offline (the same numpy code on the same frames): bit-equal, for any chunking.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from qedge.errors import QedgeError
from qedge.runtime.audio import load_audio
from qedge.runtime.features import (
    FeatureConfig,
    LogMelDeltas,
    StreamingLogMelDeltas,
    delta_kernels,
    mel_filterbank,
)

librosa = pytest.importorskip("librosa")

CLIPS = ["001 - Dog bark/1-100032-A.ogg", "005 - Clock tick/1-21934-A.ogg", "010 - Fire crackling/4-181286-A.ogg"]


def _clip(esc10_root, name: str, sr: int = 32000) -> np.ndarray:
    path = esc10_root / name
    if not path.exists():  # fall back to any clip of that class folder
        path = sorted((esc10_root / name.split("/")[0]).glob("*.ogg"))[0]
    return load_audio(path, sr)


def _librosa_features(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    spec = librosa.stft(
        y.astype(np.float64), n_fft=cfg.n_fft, hop_length=cfg.hop_length, window="hann",
        center=True, pad_mode="reflect",
    )
    fb = librosa.filters.mel(
        sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax, dtype=np.float64
    )
    logmel = librosa.power_to_db(fb @ np.abs(spec) ** 2, ref=1.0, amin=1e-10, top_db=None).T
    deltas = [librosa.feature.delta(logmel, width=cfg.delta_width, order=k, axis=0, mode="interp") for k in (1, 2, 3)]
    return np.stack([logmel] + deltas)


def _assert_features_close(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours[0], ref[0], rtol=0, atol=1e-4)
    for k in (1, 2, 3):
        scale = max(1.0, float(np.abs(ref[k]).max()))
        np.testing.assert_allclose(ours[k], ref[k], rtol=0, atol=1e-4 * scale, err_msg=f"delta order {k}")


# -- config ------------------------------------------------------------------------------------
def test_config_defaults_and_roundtrip():
    cfg = FeatureConfig()
    assert (cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.n_mels) == (32000, 1024, 320, 64)
    assert (cfg.fmin, cfg.fmax, cfg.delta_width) == (50.0, 14000.0, 9)
    assert cfg.num_frames(160000) == 501 and cfg.num_frames(0) == 1 and cfg.num_frames(319) == 1
    assert cfg.lookahead_frames == 4 and cfg.latency_samples == 4 * 320 + 512
    other = FeatureConfig(sample_rate=8000, n_fft=256, hop_length=80, n_mels=32, fmin=20, fmax=4000)
    assert FeatureConfig.from_json(other.to_json()) == other
    assert FeatureConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert FeatureConfig.from_dict({"n_mels": 128}).n_mels == 128  # missing keys take defaults


@pytest.mark.parametrize(
    "bad",
    [
        {"n_melz": 64},
        {"sample_rate": -1},
        {"sample_rate": "32000"},
        {"n_fft": 1000.5},
        {"hop_length": 2048},
        {"fmax": 20000.0},
        {"fmin": 500.0, "fmax": 100.0},
        {"delta_width": 8},
        {"delta_width": 3},
        {"n_mels": True},
        {"fmin": float("nan")},
    ],
)
def test_config_rejects_invalid(bad):
    with pytest.raises(QedgeError):
        FeatureConfig.from_dict(bad)


def test_config_rejects_bad_json_and_empty_mel_bands():
    with pytest.raises(QedgeError):
        FeatureConfig.from_json("{not json")
    with pytest.raises(QedgeError):
        FeatureConfig.from_json("[1, 2]")
    with pytest.raises(QedgeError, match="mel bands"):
        LogMelDeltas(FeatureConfig(sample_rate=8000, n_fft=64, hop_length=32, n_mels=64, fmin=0, fmax=4000))


# -- building blocks ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cfg", [FeatureConfig(), FeatureConfig(sample_rate=8000, n_fft=256, hop_length=80, n_mels=40, fmin=20, fmax=4000)]
)
def test_mel_filterbank_matches_librosa(cfg):
    ref = librosa.filters.mel(
        sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax, dtype=np.float64
    )
    ours = mel_filterbank(cfg)
    assert ours.shape == (cfg.n_mels, cfg.n_fft // 2 + 1)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("width", [5, 9, 11])
def test_delta_kernels_are_savgol(width):
    from scipy.signal import savgol_coeffs

    k = delta_kernels(width)
    assert k.shape == (3, width)
    for order in (1, 2, 3):
        np.testing.assert_allclose(k[order - 1], savgol_coeffs(width, order, deriv=order, use="dot"), atol=1e-12)
    # Exact on polynomials: Δ1 of a line is its slope, Δ3 of t³ is 6.
    t = np.arange(width) - width // 2
    assert k[0] @ (2.5 * t + 1) == pytest.approx(2.5)
    assert k[2] @ (t.astype(float) ** 3) == pytest.approx(6.0)


# -- offline features vs librosa ---------------------------------------------------------------
@pytest.mark.parametrize("name", CLIPS)
def test_compute_matches_librosa_on_esc10(esc10_root, name):
    y = _clip(esc10_root, name)
    cfg = FeatureConfig()
    feats = LogMelDeltas(cfg).compute(y)
    assert feats.dtype == np.float32 and feats.shape == (4, cfg.num_frames(len(y)), 64)
    _assert_features_close(feats, _librosa_features(y, cfg))


def test_compute_matches_librosa_on_fsdd_config(fsdd_root):
    cfg = FeatureConfig(sample_rate=8000, n_fft=256, hop_length=80, n_mels=40, fmin=20, fmax=4000)
    y = load_audio(fsdd_root / "recordings" / "3_theo_7.wav", 8000)
    _assert_features_close(LogMelDeltas(cfg).compute(y), _librosa_features(y, cfg))


@pytest.mark.parametrize("samples", [8 * 320, 8 * 320 + 319, 11 * 320 + 5])
def test_compute_matches_librosa_at_the_shortest_lengths(esc10_root, samples):
    # 9, 9 and 12 frames: the 'interp' edges cover (nearly) the whole clip.
    y = _clip(esc10_root, CLIPS[0])[40000 : 40000 + samples]
    cfg = FeatureConfig()
    _assert_features_close(LogMelDeltas(cfg).compute(y), _librosa_features(y, cfg))


def test_compute_silence_and_short_clips():
    ex = LogMelDeltas()
    silent = ex.compute(np.zeros(32000, dtype=np.float32))
    assert np.all(silent[0] == -100.0)
    np.testing.assert_allclose(silent[1:], 0.0, atol=1e-9)
    # Shorter than the 9-frame derivative window (librosa refuses): one fit over all frames.
    short = np.random.default_rng(0).standard_normal(1500).astype(np.float32)
    f = ex.compute(short)
    assert f.shape == (4, 5, 64) and np.isfinite(f).all()
    t = np.arange(5) - 2.0
    ramp = np.repeat((3.0 * t)[:, None], 64, axis=1)  # a log-mel rising 3 dB per frame → Δ1 = 3
    from qedge.runtime.features import _deltas_interp

    d = _deltas_interp(ramp, ex.kernels)
    np.testing.assert_allclose(d[0], 3.0, atol=1e-9)
    np.testing.assert_allclose(d[1:], 0.0, atol=1e-9)
    with pytest.raises(QedgeError):
        ex.compute(np.zeros(0, dtype=np.float32))
    with pytest.raises(QedgeError):
        ex.compute(np.array([0.0, np.nan, 1.0]))
    with pytest.raises(QedgeError):
        ex.compute(np.zeros((2, 100)))


# -- streaming ---------------------------------------------------------------------------------
def _stream_in_chunks(stream: StreamingLogMelDeltas, x: np.ndarray, rng, sizes, check_timing=True):
    cfg = stream.config
    outs, pos = [], 0
    while pos < len(x):
        n = int(rng.choice(sizes))
        out = stream.push(x[pos : pos + n])
        pos = min(pos + n, len(x))
        outs.append(out)
        if check_timing:
            # Frame t is out as soon as (t + 4)·hop + n_fft/2 samples are in (frames 0..4 together).
            centres = np.arange(cfg.num_frames(pos)) * cfg.hop_length
            ready = int(np.count_nonzero(centres + cfg.latency_samples <= pos))
            assert stream.frames_emitted == (ready if ready > cfg.lookahead_frames else 0)
    outs.append(stream.flush())
    return np.concatenate(outs, axis=1)


def _signals(esc10_root):
    rng = np.random.default_rng(7)
    t = np.arange(3 * 32000) / 32000
    chirp = np.sin(2 * np.pi * (200 * t + 1500 * t**2)).astype(np.float32)
    clip = _clip(esc10_root, CLIPS[0])[: 2 * 32000]
    return [
        ("esc10", clip),
        ("chirp", chirp),
        ("noise", (0.1 * rng.standard_normal(20011)).astype(np.float32)),
        ("short", (0.1 * rng.standard_normal(3000)).astype(np.float32)),
        ("tiny", (0.1 * rng.standard_normal(300)).astype(np.float32)),
    ]


def test_streaming_equals_offline_random_chunks(esc10_root):
    ex = LogMelDeltas()
    rng = np.random.default_rng(1234)
    for label, x in _signals(esc10_root):
        ref = ex.compute(x)
        stream = ex.stream()
        got = _stream_in_chunks(stream, x, rng, [1, 17, 320, 321, 1024, 1500, 4000])
        assert got.shape == ref.shape, label
        assert stream.frames_emitted == ref.shape[1]
        np.testing.assert_array_equal(got, ref, err_msg=label)  # bit-equal, not merely close


def test_streaming_sample_by_sample_and_reset(esc10_root):
    cfg = FeatureConfig(sample_rate=8000, n_fft=256, hop_length=200, n_mels=24, fmin=20, fmax=4000, delta_width=5)
    ex = LogMelDeltas(cfg)
    x = _clip(esc10_root, CLIPS[1], sr=8000)[:5000]
    stream = ex.stream()
    rng = np.random.default_rng(5)
    got = _stream_in_chunks(stream, x, rng, [1])
    np.testing.assert_array_equal(got, ex.compute(x))
    with pytest.raises(QedgeError):
        stream.push(x[:10])
    stream.reset()
    assert stream.frames_emitted == 0
    got2 = _stream_in_chunks(stream, x[1000:], rng, [5000, 7])
    np.testing.assert_array_equal(got2, ex.compute(x[1000:]))


def test_streaming_without_flush_holds_back_only_the_tail(esc10_root):
    ex = LogMelDeltas()
    x = _clip(esc10_root, CLIPS[2])[:32000]
    stream = StreamingLogMelDeltas(ex)
    got = np.concatenate([stream.push(c) for c in np.array_split(x, 37)], axis=1)
    ref = ex.compute(x)
    cfg = ex.config
    expected = sum(1 for t in range(ref.shape[1]) if t * cfg.hop_length + cfg.latency_samples <= len(x))
    assert got.shape[1] == expected >= ref.shape[1] - 6
    np.testing.assert_array_equal(got, ref[:, :expected])
    with pytest.raises(QedgeError):
        stream.push(np.array([np.inf]))
