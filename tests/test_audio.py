"""Audio reading: formats, mixdown, resampling, and one-line errors on bad files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from qedge.errors import QedgeError
from qedge.runtime.audio import load_audio, read_audio, resample, to_mono


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


def test_reads_real_recordings(esc10_root, fsdd_root):
    clip = sorted((esc10_root / "002 - Rain").glob("*.ogg"))[0]
    y = load_audio(clip, 32000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 5 * 32000) <= 32  # ~5 s ESC clips
    assert 0 < np.abs(y).max() <= 1.0
    native, rate = read_audio(clip)
    assert rate == 44100 and native.shape[1] == 1
    digit = load_audio(fsdd_root / "recordings" / "0_george_0.wav", None)
    ref, _ = sf.read(fsdd_root / "recordings" / "0_george_0.wav", dtype="float32")
    np.testing.assert_array_equal(digit, ref)


@pytest.mark.parametrize(
    "fmt,subtype",
    [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "FLOAT"), ("WAV", "PCM_U8"), ("FLAC", "PCM_16"), ("OGG", "VORBIS")],
)
def test_formats_and_resampling_keep_a_sine(tmp_path, fmt, subtype):
    sr, f0 = 44100, 1000.0
    t = np.arange(sr) / sr
    x = 0.5 * np.sin(2 * np.pi * f0 * t)
    path = tmp_path / f"sine.{fmt.lower()}"
    sf.write(path, x, sr, format=fmt, subtype=subtype)
    y = load_audio(path, 32000)
    assert y.dtype == np.float32 and abs(len(y) - 32000) <= 1
    assert _peak_hz(y, 32000) == pytest.approx(f0, abs=2.0)
    assert np.sqrt(np.mean(y[2000:-2000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


def test_stereo_mixdown(tmp_path):
    sr = 16000
    t = np.arange(sr) / sr
    left, right = 0.4 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), sr, subtype="FLOAT")
    y = load_audio(path, None)
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-6)
    assert to_mono(np.ones((10, 1), dtype=np.float32)).shape == (10,)
    with pytest.raises(QedgeError):
        to_mono(np.zeros((2, 3, 4)))


def test_resample_rates_and_lengths():
    x = np.sin(2 * np.pi * 300 * np.arange(8000) / 8000).astype(np.float32)
    up = resample(x, 8000, 32000)
    assert up.dtype == np.float32 and len(up) == 32000
    assert _peak_hz(up, 32000) == pytest.approx(300, abs=2)
    assert resample(x, 8000, 8000) is not None and len(resample(x, 8000, 8000)) == 8000
    down = resample(np.sin(2 * np.pi * 5000 * np.arange(44100) / 44100), 44100, 8000)
    assert np.abs(down[200:-200]).max() < 0.01  # 5 kHz is above the new Nyquist: filtered out
    with pytest.raises(QedgeError):
        resample(x, 0, 8000)


def test_silence_is_fine(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(4000), 8000)
    y = load_audio(path, 32000)
    assert len(y) == 16000 and not y.any()


def _one_line_error(path, match: str) -> str:
    with pytest.raises(QedgeError, match=match) as info:
        load_audio(path, 32000)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_bad_files_give_one_line_errors(tmp_path):
    _one_line_error(tmp_path / "missing.wav", "not found")
    (tmp_path / "empty.wav").write_bytes(b"")
    _one_line_error(tmp_path / "empty.wav", "empty")
    (tmp_path / "notes.wav").write_text("this is a text file, not audio\n" * 20)
    _one_line_error(tmp_path / "notes.wav", "cannot read")
    (tmp_path / "random.ogg").write_bytes(np.random.default_rng(0).bytes(5000))
    _one_line_error(tmp_path / "random.ogg", "cannot read")
    _one_line_error(tmp_path, "not an audio file")

    good = tmp_path / "good.wav"
    sf.write(good, np.sin(np.arange(16000) * 0.1), 16000)
    data = good.read_bytes()
    (tmp_path / "truncated.wav").write_bytes(data[: len(data) // 2])
    _one_line_error(tmp_path / "truncated.wav", "truncated")
    (tmp_path / "header_only.wav").write_bytes(data[:30])
    _one_line_error(tmp_path / "header_only.wav", "cannot read")
    flac = tmp_path / "good.flac"
    sf.write(flac, np.sin(np.arange(16000) * 0.1), 16000)
    (tmp_path / "corrupt.flac").write_bytes(flac.read_bytes()[:200] + b"\x00" * 50)
    _one_line_error(tmp_path / "corrupt.flac", "cannot read")

    empty_audio = tmp_path / "zero_frames.wav"
    sf.write(empty_audio, np.zeros(0), 16000)
    _one_line_error(empty_audio, "no samples")


def test_nan_samples_rejected(tmp_path):
    x = np.zeros(1000, dtype=np.float32)
    x[10] = np.nan
    x[20] = np.inf
    path = tmp_path / "nan.wav"
    sf.write(path, x, 8000, subtype="FLOAT")
    msg = _one_line_error(path, "NaN")
    assert "2 NaN" in msg
