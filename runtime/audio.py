"""Reading audio files, mono mixdown and resampling (numpy/scipy/soundfile only; torch-free).

``load_audio(path, sample_rate)`` is the one way the project reads a clip: soundfile (libsndfile:
WAV, FLAC, Ogg Vorbis/Opus, AIFF, … in any PCM or float format) → float32 in [-1, 1) → mono
mixdown (mean of the channels) → polyphase resampling to ``sample_rate``. Every user-facing
failure is a one-line :class:`~qedge.errors.QedgeError` naming the file.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np

from qedge.errors import QedgeError

__all__ = ["load_audio", "read_audio", "resample", "to_mono", "AUDIO_EXTENSIONS"]

#: File extensions the dataset scanners treat as audio.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".mp3")


def to_mono(x: np.ndarray) -> np.ndarray:
    """Mono mixdown: (frames,) is returned as is; (frames, channels) → mean over channels."""
    x = np.asarray(x)
    if x.ndim == 1:
        return x
    if x.ndim != 2:
        raise QedgeError(f"audio must be (frames,) or (frames, channels), got shape {x.shape}")
    if x.shape[1] == 1:
        return x[:, 0]
    return x.mean(axis=1, dtype=np.float64).astype(x.dtype if x.dtype.kind == "f" else np.float32)


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample a mono (or (frames, channels)) signal with a polyphase filter.

    ``scipy.signal.resample_poly(x, up, down)`` with up/down = to/from rate reduced by their gcd
    (44.1 kHz → 32 kHz: up 320, down 441); Kaiser-windowed FIR anti-aliasing at the lower Nyquist.
    Output length ceil(n · up / down). Returns float32; the filter runs in float64.
    """
    from_rate, to_rate = int(from_rate), int(to_rate)
    if from_rate <= 0 or to_rate <= 0:
        raise QedgeError(f"sample rates must be positive, got {from_rate} → {to_rate}")
    x = np.asarray(x)
    if from_rate == to_rate or x.shape[0] == 0:
        return x.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = math.gcd(from_rate, to_rate)
    y = resample_poly(x.astype(np.float64, copy=False), to_rate // g, from_rate // g, axis=0)
    return y.astype(np.float32)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a file as float32 ``(frames, channels)`` at its native rate → (samples, rate).

    Raises :class:`QedgeError` (one line, naming the file) when the file is missing, empty, not
    audio, corrupt, truncated (a WAV whose data chunk is shorter than its header says), has no
    samples, or holds NaN/inf samples.
    """
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise QedgeError(f"audio file not found: {p}")
    if not p.is_file():
        raise QedgeError(f"not an audio file (a directory or special file): {p}")
    if p.stat().st_size == 0:
        raise QedgeError(f"audio file is empty (0 bytes): {p}")
    _check_wav_complete(p)
    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError, OSError) as exc:
        reason = " ".join(str(exc).split())
        reason = reason.replace(f"Error opening {str(p)!r}: ", "").replace(f"Error opening '{p}': ", "")
        raise QedgeError(f"cannot read audio file {p}: {reason or type(exc).__name__}") from None
    if data.shape[0] == 0:
        raise QedgeError(f"audio file contains no samples: {p}")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise QedgeError(f"audio file contains {bad} NaN or infinite sample(s): {p}")
    return data, int(rate)


def load_audio(path: str | os.PathLike, sample_rate: int | None) -> np.ndarray:
    """Read ``path`` as a float32 mono waveform at ``sample_rate`` Hz (None: keep the file's rate).

    Samples are in [-1, 1) for PCM files (float files as stored); channels are averaged;
    resampling uses :func:`resample`. Silence is fine. Errors: see :func:`read_audio`.
    """
    data, rate = read_audio(path)
    mono = to_mono(data)
    if sample_rate is not None and int(sample_rate) != rate:
        mono = resample(mono, rate, int(sample_rate))
    return np.ascontiguousarray(mono, dtype=np.float32)


def _check_wav_complete(p: Path) -> None:
    """Catch truncated RIFF/WAVE files, which libsndfile reads silently as shorter audio.

    Walks the RIFF chunks; if the ``data`` chunk declares more bytes than the file holds, the
    file was cut short. Streamed WAVs that write a 0 or 0xFFFFFFFF placeholder size pass.
    """
    size = p.stat().st_size
    try:
        with open(p, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return
            pos = 12
            while pos + 8 <= size:
                fh.seek(pos)
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return
                cid, clen = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"data":
                    if clen not in (0, 0xFFFFFFFF) and pos + 8 + clen > size:
                        have = size - pos - 8
                        raise QedgeError(
                            f"audio file is truncated: {p} (data chunk declares {clen} bytes, "
                            f"file holds {have})"
                        )
                    return
                pos += 8 + clen + (clen & 1)
    except OSError as exc:
        raise QedgeError(f"cannot read audio file {p}: {exc.strerror or exc}") from None
