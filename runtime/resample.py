"""Streaming resampling for ``qedge listen``: a source's rate to the model's, block by block.

:class:`StreamResampler` is the streaming form of ``scipy.signal.resample_poly`` (the offline
resampler behind ``runtime.audio.resample``): the same Kaiser-windowed FIR, applied polyphase to
chunks as they arrive, with no seams between chunks. :func:`lowpass_fir` builds that filter with
numpy alone, so the listener never imports ``scipy.signal`` (seconds at start-up on a small board).
Torch-free, like all of :mod:`qedge.runtime`.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

__all__ = ["StreamResampler", "lowpass_fir"]


def lowpass_fir(numtaps: int, cutoff: float, beta: float = 5.0) -> np.ndarray:
    """Kaiser-windowed sinc low-pass, unit DC gain: ``scipy.signal.firwin(numtaps, cutoff,
    window=('kaiser', beta))`` (cutoff as a fraction of Nyquist) without importing scipy.signal
    (seconds at start-up on a small board).

        h[n] = c · sinc(c · (n − (N−1)/2)) · kaiser_β[n],  then h /= Σ h.
    """
    m = np.arange(numtaps) - (numtaps - 1) / 2.0
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(numtaps, beta)
    return h / h.sum()


class StreamResampler:
    """Streaming polyphase resampler src → dst Hz, chunk by chunk, with no seams.

    Rational factor up/down = dst/src (reduced). The anti-aliasing FIR is the one of
    ``scipy.signal.resample_poly`` used by ``runtime.audio.resample`` (Kaiser β = 5, 2·10·max(up, down)+1 taps, cutoff 1/max(up,
    down), gain ``up``), centred, so the streamed output equals ``resample_poly``'s on the same
    signal except within the filter's reach of the end. Filtering runs in float64 (like ``resample_poly``); output is float32. Output sample n is

        z[n] = Σ_k h[p + k·up] · x[⌊q/up⌋ − k],   q = n·down + D,  p = q mod up,  D = (L−1)/2,

    (x[j] = 0 for j < 0) and is emitted as soon as x[⌊q/up⌋] has arrived: the resampler adds
    ⌈D/up⌉ input samples of latency (≈ 0.3 ms at 48 → 32 kHz).
    """

    def __init__(self, src_rate: int, dst_rate: int, half_len: int = 10) -> None:
        self.src_rate, self.dst_rate = int(src_rate), int(dst_rate)
        ratio = Fraction(self.dst_rate, self.src_rate)
        self.up, self.down = ratio.numerator, ratio.denominator
        self.identity = self.up == self.down == 1
        if self.identity:
            return
        max_rate = max(self.up, self.down)
        h = lowpass_fir(2 * half_len * max_rate + 1, 1.0 / max_rate) * self.up
        self.delay = (len(h) - 1) // 2
        self.taps = math.ceil(len(h) / self.up)
        padded = np.zeros(self.taps * self.up)
        padded[: len(h)] = h
        self._poly = np.ascontiguousarray(padded.reshape(self.taps, self.up).T)  # [p, k] = h[p + k·up]
        self._hist = np.zeros(self.taps)  # x[base - taps : base]
        self._base = 0  # absolute index of the first sample after the history
        self._next_out = 0

    def process(self, x: np.ndarray) -> np.ndarray:
        """Feed mono samples ``x``; return every output sample that is now complete."""
        if self.identity:
            return np.asarray(x, dtype=np.float32).reshape(-1)
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        buf = np.concatenate([self._hist, x])  # buf[i] = x_abs[base - taps + i]
        total = self._base + len(x)  # inputs known: indices < total
        # Largest n with ⌊(n·down + D)/up⌋ ≤ total − 1.
        n_end = (total * self.up - self.delay - 1) // self.down + 1 if total > 0 else 0
        n0 = self._next_out
        out = np.zeros(0, dtype=np.float32)
        if n_end > n0:
            n = np.arange(n0, n_end, dtype=np.int64)
            q = n * self.down + self.delay
            j0 = q // self.up
            p = q % self.up
            idx = (j0 - (self._base - self.taps))[:, None] - np.arange(self.taps)[None, :]
            valid = idx >= 0  # before the stream started: zeros
            vals = np.where(valid, buf[np.clip(idx, 0, len(buf) - 1)], 0.0)
            out = np.einsum("nk,nk->n", self._poly[p], vals).astype(np.float32)
            self._next_out = n_end
        self._hist = buf[-self.taps:].copy() if len(buf) >= self.taps else np.concatenate(
            [np.zeros(self.taps - len(buf)), buf])
        self._base = total
        return out
