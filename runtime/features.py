"""Log-mel + Δ1 Δ2 Δ3 front end: the four quaternion input components (design.md §4). Torch-free.

The quaternion input of one time–frequency bin is

    Q(f, t) = ψ(f, t) + ∂ψ/∂t · i + ∂²ψ/∂t² · j + ∂³ψ/∂t³ · k,

with ψ the log-mel energy (PANNs CNN14 front end) and ∂^k/∂t^k the order-k Savitzky–Golay
derivative along time over ``delta_width`` frames (``librosa.feature.delta(width, order=k,
mode='interp')`` semantics). Features are laid out ``(4, frames, n_mels)``: component-major, the
model input layout (``runtime.model_info.INPUT_NAME``).

Offline (:meth:`LogMelDeltas.compute`) and streaming (:class:`StreamingLogMelDeltas`) paths
share every definition here, and training's feature cache calls the offline path: this is the one
feature algorithm of qedge. The file is longer than the project's ~400-line guide on purpose: the
streaming state machine must equal the offline definition bit for bit, and keeping both beside
the constants they share (window, filterbank, derivative kernels, edge rule) is what makes that
checkable in one reading.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from qedge.errors import QedgeError

__all__ = [
    "FeatureConfig",
    "LogMelDeltas",
    "StreamingLogMelDeltas",
    "mel_filterbank",
    "delta_kernels",
    "poly_derivative_weights",
    "hann_window",
    "AMIN",
]

#: Power floor of the log: log-mel = 10·log10(max(S, AMIN)) (ref 1.0, no top_db clamp).
AMIN = 1e-10


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureConfig:
    """Front-end parameters; stored in every model file (design.md §4, §8).

    Defaults are the PANNs CNN14 front end: 32 kHz, Hann n_fft 1024, hop 320 (10 ms), 64 Slaney
    mel bands 50 Hz–14 kHz, and 9-frame Savitzky–Golay derivatives.
    """

    sample_rate: int = 32000
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    delta_width: int = 9

    def __post_init__(self) -> None:
        ints = ("sample_rate", "n_fft", "hop_length", "n_mels", "delta_width")
        for name in ints:
            object.__setattr__(self, name, _as_int(name, getattr(self, name)))
        for name in ("fmin", "fmax"):
            object.__setattr__(self, name, _as_float(name, getattr(self, name)))
        if self.sample_rate <= 0:
            raise QedgeError(f"feature config: sample_rate must be > 0, got {self.sample_rate}")
        if self.n_fft < 2:
            raise QedgeError(f"feature config: n_fft must be ≥ 2, got {self.n_fft}")
        if not 0 < self.hop_length <= self.n_fft:
            raise QedgeError(
                f"feature config: hop_length must be in 1..n_fft ({self.n_fft}), got {self.hop_length}"
            )
        if self.n_mels <= 0:
            raise QedgeError(f"feature config: n_mels must be > 0, got {self.n_mels}")
        nyquist = self.sample_rate / 2
        if not 0.0 <= self.fmin < self.fmax <= nyquist:
            raise QedgeError(
                f"feature config: need 0 ≤ fmin < fmax ≤ sample_rate/2 ({nyquist:g}), "
                f"got fmin={self.fmin:g} fmax={self.fmax:g}"
            )
        if self.delta_width < 5 or self.delta_width % 2 == 0:
            raise QedgeError(
                "feature config: delta_width must be odd and ≥ 5 (a cubic fit needs 4+ frames), "
                f"got {self.delta_width}"
            )

    # -- derived quantities ----------------------------------------------------------------------
    def num_frames(self, num_samples: int) -> int:
        """Frames of a clip of ``num_samples`` samples with centred framing: 1 + n // hop."""
        if num_samples < 0:
            raise ValueError("num_samples must be ≥ 0")
        return 1 + int(num_samples) // self.hop_length

    @property
    def lookahead_frames(self) -> int:
        """Future frames each derivative needs: delta_width // 2 (4 frames = 40 ms by default)."""
        return self.delta_width // 2

    @property
    def latency_samples(self) -> int:
        """Streaming latency: samples after frame t's centre (t·hop) before frame t is emitted.

        = lookahead_frames·hop + n_fft//2 (the derivatives' look-ahead plus the STFT's half
        window): 4·320 + 512 = 1792 samples = 56 ms at 32 kHz by default.
        """
        return self.lookahead_frames * self.hop_length + self.n_fft // 2

    @property
    def frame_seconds(self) -> float:
        """Seconds between frames (hop / sample_rate)."""
        return self.hop_length / self.sample_rate

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureConfig":
        """Build from a dict; unknown keys or invalid values raise :class:`QedgeError`.

        Missing keys take the defaults.
        """
        if isinstance(data, FeatureConfig):
            return data
        if not isinstance(data, dict):
            raise QedgeError(f"feature config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise QedgeError(
                f"feature config: unknown key(s) {', '.join(map(str, unknown))} "
                f"(known: {', '.join(sorted(known))})"
            )
        return cls(**data)

    def to_json(self) -> str:
        """Compact JSON with sorted keys (what ONNX ``qedge.features`` carries)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "FeatureConfig":
        """Parse JSON written by :meth:`to_json`; malformed text raises :class:`QedgeError`."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise QedgeError(f"feature config: not valid JSON ({exc})") from None
        return cls.from_dict(data)


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise QedgeError(f"feature config: {name} must be an integer, got {value!r}")
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value) or value != int(value):
            raise QedgeError(f"feature config: {name} must be an integer, got {value!r}")
    return int(value)


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise QedgeError(f"feature config: {name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise QedgeError(f"feature config: {name} must be finite, got {value!r}")
    return value


# ----------------------------------------------------------------------------------------------
# Filterbank, window, derivative kernels (ONE definition each)
# ----------------------------------------------------------------------------------------------
_F_SP = 200.0 / 3  # Slaney: 66.67 Hz per mel below 1 kHz
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15 mels
_LOGSTEP = math.log(6.4) / 27.0  # log-spaced above 1 kHz


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's Auditory Toolbox mel scale (librosa ``htk=False``): linear < 1 kHz, log above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_region = hz >= _MIN_LOG_HZ
    mel = np.where(log_region, _MIN_LOG_MEL + np.log(np.maximum(hz, 1e-300) / _MIN_LOG_HZ) / _LOGSTEP, mel)
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = _F_SP * mel
    return np.where(mel >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), hz)


def mel_filterbank(config: FeatureConfig) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular mel filters, float64 ``(n_mels, n_fft//2 + 1)``.

    Same construction as ``librosa.filters.mel(htk=False, norm='slaney')``: n_mels + 2 points
    equally spaced on the Slaney mel scale between fmin and fmax; filter m rises linearly from
    point m to m+1 and falls to m+2 (evaluated at the FFT bin frequencies k·sr/n_fft), scaled by
    2 / (f_{m+2} − f_m) so every filter has unit area in Hz.
    Raises :class:`QedgeError` when a band falls between FFT bins (too many mels for n_fft).
    """
    n_bins = config.n_fft // 2 + 1
    fft_freqs = np.linspace(0.0, config.sample_rate / 2, n_bins)
    mel_pts = np.linspace(_hz_to_mel(config.fmin), _hz_to_mel(config.fmax), config.n_mels + 2)
    hz_pts = _mel_to_hz(mel_pts)
    fdiff = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_pts[2:] - hz_pts[:-2]))[:, None]
    empty = np.flatnonzero(weights.max(axis=1) <= 0)
    if empty.size:
        raise QedgeError(
            f"feature config: {empty.size} of {config.n_mels} mel bands contain no FFT bin "
            f"(n_fft={config.n_fft} is too small for n_mels={config.n_mels} at "
            f"{config.sample_rate} Hz); use fewer mels or a larger n_fft"
        )
    return weights


def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window (``scipy.signal.get_window('hann', n, fftbins=True)``), float64."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)


def poly_derivative_weights(n: int, order: int) -> np.ndarray:
    """Weights w (n,) with w·y = the ``order``-th derivative of the least-squares polynomial of
    degree ``order`` through (p, y_p), p = 0..n−1 (constant in p; 0 when n ≤ order)."""
    if n <= order:
        return np.zeros(n)
    p = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    vander = np.vander(p, order + 1, increasing=True)  # columns 1, p, …, p^order
    return math.factorial(order) * np.linalg.pinv(vander)[order]


def delta_kernels(width: int) -> np.ndarray:
    """Savitzky–Golay derivative kernels of order 1..3, float64 ``(3, width)``.

    Row k−1 holds weights c_k with  Δk[t] = Σ_j c_k[j] · ψ[t − width//2 + j]  (correlation order,
    as ``scipy.signal.savgol_coeffs(width, k, deriv=k, use='dot')``): the k-th derivative of the
    degree-k least-squares polynomial fitted to the ``width`` frames centred on t. This is what
    ``librosa.feature.delta(width=width, order=k)`` applies (``savgol_filter(polyorder=order,
    deriv=order)``) — design.md §4.
    """
    width = int(width)
    if width < 5 or width % 2 == 0:
        raise ValueError(f"delta width must be odd and ≥ 5, got {width}")
    return np.stack([poly_derivative_weights(width, k) for k in (1, 2, 3)])


def _correlate_time(logmel: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Valid correlation along time: (T, M) with (3, W) → (3, T − W + 1, M), one BLAS product."""
    width = kernels.shape[1]
    n = logmel.shape[0] - width + 1
    taps = np.stack([logmel[j : j + n] for j in range(width)])  # (W, n, M)
    return (kernels @ taps.reshape(width, -1)).reshape(3, n, logmel.shape[1])


def _deltas_interp(logmel: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Δ1..Δ3 of ``logmel`` (T, M) along time with ``mode='interp'`` edges → (3, T, M) float64.

    Interior frames: correlation with ``kernels``. Edges (``librosa``/``scipy`` 'interp'): the
    degree-k polynomial fitted to the first/last ``width`` frames is evaluated at the edge frames;
    its k-th derivative is constant, so the first/last width//2 frames repeat the nearest full-
    window value. Clips shorter than ``width`` frames (where librosa raises) use one fit over all
    T frames (zero when T ≤ k).
    """
    frames, n_mels = logmel.shape
    width = kernels.shape[1]
    half = width // 2
    out = np.empty((3, frames, n_mels), dtype=np.float64)
    if frames >= width:
        inner = _correlate_time(logmel, kernels)
        out[:, half : frames - half] = inner
        out[:, :half] = inner[:, :1]
        out[:, frames - half :] = inner[:, -1:]
    else:
        for k in (1, 2, 3):
            out[k - 1] = poly_derivative_weights(frames, k) @ logmel
    return out


# ----------------------------------------------------------------------------------------------
# Offline extractor
# ----------------------------------------------------------------------------------------------
class LogMelDeltas:
    """Whole-clip log-mel + Δ1..Δ3 extractor (numpy/scipy; float64 inside, float32 out).

    ψ = 10·log10(max(M·|STFT(x)|², 1e-10)): Hann-windowed (periodic) frames of n_fft samples every
    hop, centred (frame t at sample t·hop) with reflect padding of n_fft//2 at both ends, power
    spectrum, Slaney mel filterbank M — then Δk = ∂^kψ/∂t^k by :func:`delta_kernels` with 'interp'
    edges (design.md §4).
    """

    def __init__(self, config: FeatureConfig | None = None) -> None:
        self.config = config if config is not None else FeatureConfig()
        if not isinstance(self.config, FeatureConfig):
            self.config = FeatureConfig.from_dict(self.config)
        self.filterbank = mel_filterbank(self.config)  # (M, F) float64
        self.window = hann_window(self.config.n_fft)
        self.kernels = delta_kernels(self.config.delta_width)
        self._filterbank_t = np.ascontiguousarray(self.filterbank.T)

    # -- pieces shared with the streaming path ---------------------------------------------------
    def _logmel_frames(self, frames: np.ndarray) -> np.ndarray:
        """Windowed frames (N, n_fft) float64 → log-mel (N, n_mels) float64."""
        spec = np.fft.rfft(frames * self.window, axis=-1)
        power = spec.real**2 + spec.imag**2
        mel = power @ self._filterbank_t
        return 10.0 * np.log10(np.maximum(mel, AMIN))

    def logmel(self, waveform: np.ndarray) -> np.ndarray:
        """Log-mel (frames, n_mels) float64 of a whole mono clip (centred, reflect-padded)."""
        x = _check_waveform(waveform)
        pad = self.config.n_fft // 2
        padded = np.pad(x, pad, mode="reflect") if x.size > 1 else np.pad(x, pad, mode="edge")
        count = self.config.num_frames(x.size)
        return self._logmel_frames(_frames(padded, self.config.n_fft, self.config.hop_length, count))

    def compute(self, waveform: np.ndarray) -> np.ndarray:
        """Features ``(4, frames, n_mels)`` float32 of a whole mono clip; frames = 1 + n // hop."""
        psi = self.logmel(waveform)
        out = np.empty((4,) + psi.shape, dtype=np.float32)
        out[0] = psi
        out[1:] = _deltas_interp(psi, self.kernels)
        return out

    __call__ = compute

    def stream(self) -> "StreamingLogMelDeltas":
        """A fresh incremental extractor with this configuration."""
        return StreamingLogMelDeltas(self)


def _check_waveform(waveform: np.ndarray) -> np.ndarray:
    x = np.asarray(waveform)
    if x.ndim != 1:
        raise QedgeError(f"features need a mono 1-D waveform, got shape {tuple(x.shape)}")
    if x.size == 0:
        raise QedgeError("features need at least one audio sample, got an empty waveform")
    x = x.astype(np.float64, copy=False)
    if not np.isfinite(x).all():
        raise QedgeError("waveform contains NaN or infinite samples")
    return x


# ----------------------------------------------------------------------------------------------
# Streaming extractor
# ----------------------------------------------------------------------------------------------
class StreamingLogMelDeltas:
    """Incremental log-mel + Δ1..Δ3: push audio chunks of any size, get each frame once.

    Frame t (centre at sample t·hop) is emitted as soon as frame t + width//2 has its full STFT
    window, i.e. once ``(t + 4)·hop + n_fft//2`` samples have arrived: a latency of
    ``config.latency_samples`` = 4·hop + n_fft/2 = 1792 samples (56 ms) at the defaults. The
    first frames use the same reflect padding and 'interp' edges as :meth:`LogMelDeltas.compute`,
    so frames 0..4 come out together (with frame 4) and every streamed frame equals the offline
    frame of the same signal; only the last 4 frames (and the reflect-padded tail), which depend
    on where the clip ends, wait for :meth:`flush`.

    Work per hop: one n_fft rFFT, one mel projection and a (3 × width) filter over a ring of the
    last ``width`` log-mel frames. Samples are kept only as long as a future window needs them.
    """

    def __init__(self, extractor: LogMelDeltas | FeatureConfig | None = None) -> None:
        if not isinstance(extractor, LogMelDeltas):
            extractor = LogMelDeltas(extractor)
        self._ex = extractor
        self.config = extractor.config
        self.reset()

    def reset(self) -> None:
        """Forget all audio: the next push starts a new signal."""
        cfg = self.config
        self._raw: list[np.ndarray] = []  # samples before the start padding can be built
        self._raw_len = 0
        self._buf = np.zeros(0, dtype=np.float64)  # padded-signal samples from _buf_start on
        self._buf_start = 0  # padded-coordinate index of _buf[0]
        self._started = False
        self._next_frame = 0  # next log-mel frame to compute
        self._ring = np.zeros((0, cfg.n_mels), dtype=np.float64)  # log-mel frames from _ring_start
        self._ring_start = 0
        self._emitted = 0
        self._samples = 0
        self._flushed = False

    # -- public state ----------------------------------------------------------------------------
    @property
    def frames_emitted(self) -> int:
        """Frames returned so far (by push and flush)."""
        return self._emitted

    @property
    def samples_received(self) -> int:
        """Samples pushed so far."""
        return self._samples

    @property
    def latency_samples(self) -> int:
        """Samples after a frame's centre before that frame is emitted (see class docstring)."""
        return self.config.latency_samples

    def _empty(self) -> np.ndarray:
        return np.zeros((4, 0, self.config.n_mels), dtype=np.float32)

    # -- pushing ---------------------------------------------------------------------------------
    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Append mono samples; return the newly completed frames ``(4, new_frames, n_mels)`` float32."""
        if self._flushed:
            raise QedgeError("streaming features: push() after flush(); call reset() first")
        x = np.asarray(chunk, dtype=np.float64).reshape(-1) if np.ndim(chunk) <= 1 else None
        if x is None:
            raise QedgeError(f"streaming features need a mono 1-D chunk, got shape {np.shape(chunk)}")
        if x.size == 0:
            return self._empty()
        if not np.isfinite(x).all():
            raise QedgeError("audio chunk contains NaN or infinite samples")
        self._samples += x.size
        pad = self.config.n_fft // 2
        if not self._started:
            self._raw.append(x)
            self._raw_len += x.size
            if self._raw_len <= pad:
                return self._empty()
            raw = np.concatenate(self._raw)
            self._raw = []
            # Reflect padding of the start: padded[i] = x[pad − i] for i < pad.
            self._buf = np.concatenate([raw[pad:0:-1], raw])
            self._buf_start = 0
            self._started = True
        else:
            self._buf = np.concatenate([self._buf, x])
        return self._advance(final=False)

    def flush(self) -> np.ndarray:
        """End of signal: return the remaining frames (reflect-padded tail, 'interp' edges).

        After flush, all frames of the signal have been emitted exactly as ``compute()`` gives
        them; call :meth:`reset` to start another signal.
        """
        if self._flushed:
            return self._empty()
        self._flushed = True
        if self._samples == 0:
            return self._empty()
        if not self._started:  # shorter than half a window: nothing emitted yet
            raw = np.concatenate(self._raw)
            out = self._ex.compute(raw)
            self._emitted += out.shape[1]
            return out
        pad = self.config.n_fft // 2
        # Reflect padding of the end: padded[pad + N + j] = x[N − 2 − j].
        tail = self._buf[len(self._buf) - 1 - pad : len(self._buf) - 1][::-1]
        self._buf = np.concatenate([self._buf, tail])
        return self._advance(final=True)

    # -- internals -------------------------------------------------------------------------------
    def _advance(self, final: bool) -> np.ndarray:
        cfg = self.config
        n_fft, hop = cfg.n_fft, cfg.hop_length
        end = self._buf_start + len(self._buf)  # padded samples available
        # Frames whose window [t·hop, t·hop + n_fft) of the padded signal has fully arrived.
        total = max(self._next_frame, (end - n_fft) // hop + 1) if end >= n_fft else self._next_frame
        if final:  # the signal has 1 + N // hop frames; all fit in the padded end by construction
            total = cfg.num_frames(self._samples)
        new = total - self._next_frame
        if new > 0:
            lo = self._next_frame * hop - self._buf_start
            seg = self._buf[lo : lo + (new - 1) * hop + n_fft]
            frames = _frames(seg, n_fft, hop, new)
            psi = self._ex._logmel_frames(frames)
            self._ring = np.concatenate([self._ring, psi]) if self._ring.size else psi
            self._next_frame = total
            # Keep only the samples the next window needs.
            # (at least n_fft//2 + 1, which the reflect padding of the end reads at flush).
            keep_from = min(self._next_frame * hop - self._buf_start, len(self._buf) - n_fft // 2 - 1)
            if keep_from > 0:
                self._buf = self._buf[keep_from:]
                self._buf_start += keep_from
        out = self._emit_final() if final else self._emit()
        self._emitted += out.shape[1]
        return out

    def _emit(self) -> np.ndarray:
        """Emit every frame whose look-ahead window is complete; trim the ring."""
        kernels = self._ex.kernels
        width = kernels.shape[1]
        half = width // 2
        n_ring = self._ring.shape[0]
        if n_ring < width:
            return self._empty()
        # Window i of the ring is centred on absolute frame ring_start + half + i; the first
        # centre not yet emitted is window first_new (0 at the very start).
        first_new = max(self._emitted - (self._ring_start + half), 0)
        if n_ring - width - first_new == 0:  # the usual case per hop: one new centre
            deltas = (kernels @ self._ring[first_new:])[:, None, :]
        else:
            deltas = _correlate_time(self._ring[first_new:], kernels)  # (3, centres, M)
        parts_psi: list[np.ndarray] = []
        parts_d: list[np.ndarray] = []
        if self._emitted == 0:  # start edge: frames 0..half-1 repeat the first full-window value
            parts_psi.append(self._ring[:half])
            parts_d.append(np.repeat(deltas[:, :1], half, axis=1))
        parts_psi.append(self._ring[half + first_new : n_ring - half])
        parts_d.append(deltas)
        # Ring keeps the last width frames: the next window, and the last full window that the
        # 'interp' end edge repeats at flush.
        drop = n_ring - width
        self._ring = self._ring[drop:]
        self._ring_start += drop
        return _pack(np.concatenate(parts_psi), np.concatenate(parts_d, axis=1))

    def _emit_final(self) -> np.ndarray:
        """Emit all remaining frames with 'interp' end edges (the ring holds ≥ width frames, or all
        frames when none has been emitted)."""
        seg = self._ring
        if seg.shape[0] == 0:
            return self._empty()
        deltas = _deltas_interp(seg, self._ex.kernels)
        first = self._emitted - self._ring_start
        return _pack(seg[first:], deltas[:, first:])


def _frames(signal: np.ndarray, n_fft: int, hop: int, count: int) -> np.ndarray:
    """(count, n_fft) read-only view of frames signal[t·hop : t·hop + n_fft] (no copy)."""
    if count == 1:
        return signal[None, :n_fft]
    stride = signal.strides[0]
    return np.lib.stride_tricks.as_strided(signal, (count, n_fft), (hop * stride, stride), writeable=False)


def _pack(psi: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    out = np.empty((4,) + psi.shape, dtype=np.float32)
    out[0] = psi
    out[1:] = deltas
    return out
