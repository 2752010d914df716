"""Training augmentations (torch): waveform gain and noise, SpecAugment, mixup. Composable, seeded.

Three levels, by attribute ``level``:

- ``"wave"`` (per clip, numpy waveform, before the features): :class:`RandomTrim` (cut-off
  word or event edges), :class:`RandomEndpoint` (edges cut by an energy threshold, as a voice
  activity detector does), :class:`RandomGain`, :class:`AddNoise` (background noise at a chosen SNR).
- ``"features"`` (per clip or per batch, torch ``(..., 4, T, M)``): :class:`SpecAugment` — the
  same time and mel masks on all four quaternion components (ψ, Δ1, Δ2, Δ3), so a masked bin is
  masked as a whole quaternion.
- ``"batch"`` (features + targets): :class:`Mixup`.

Randomness: each transform draws from ``generator`` (a ``torch.Generator``) when given, else from
torch's global RNG, which the training loop re-seeds per (seed, rank, epoch) and DataLoader
workers seed per worker — so runs are reproducible. :class:`Compose` with ``seed=`` owns its own
generator.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from qedge.errors import QedgeError

__all__ = [
    "RandomTrim",
    "RandomEndpoint",
    "RandomGain",
    "AddNoise",
    "SpecAugment",
    "Mixup",
    "Compose",
    "batch_augmenter",
    "mix_at_snr",
]


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=generator).item())


def _randint(lo: int, hi: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [lo, hi] (inclusive)."""
    return int(torch.randint(lo, hi + 1, (), generator=generator).item())


def _range(value: float | Sequence[float], name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    lo, hi = (float(v) for v in value)
    if lo > hi:
        raise QedgeError(f"{name}: range ({lo}, {hi}) has min > max")
    return lo, hi


# ----------------------------------------------------------------------------------------------
# Waveform level
# ----------------------------------------------------------------------------------------------
class RandomTrim:
    """Silence a random head and tail of the sound: with the sound spanning samples [a, b) of the
    excerpt (first to last non-zero sample, L = b − a), zero [a, a + h) and [b − t, b) with
    h, t ~ U(0, max_fraction · L) drawn independently.

    What it teaches: to recognise a word or an event from part of it. Recordings are endpointed
    differently (one FSDD speaker's "six" lacks the /s/ onset that the others have), and a live
    stream's windows cut sounds at arbitrary points.
    """

    level = "wave"

    def __init__(self, max_fraction: float = 0.4) -> None:
        if not 0.0 <= max_fraction < 1.0:
            raise QedgeError(f"trim: max_fraction must be in [0, 1), got {max_fraction}")
        self.max_fraction = float(max_fraction)

    def __call__(self, wave: np.ndarray, generator: torch.Generator | None = None) -> np.ndarray:
        sound = np.flatnonzero(wave)
        head = _uniform(0.0, self.max_fraction, generator)
        tail = _uniform(0.0, self.max_fraction, generator)
        if sound.size < 2:
            return wave
        a, b = int(sound[0]), int(sound[-1]) + 1
        out = wave.copy()
        out[a : a + int(head * (b - a))] = 0
        out[b - int(tail * (b - a)) : b] = 0
        return out


class RandomEndpoint:
    """Endpoint the sound at a random energy threshold, as a voice-activity detector would.

    With frame energies E_k = 10·log10(mean x² over frame k) (non-overlapping frames of
    ``frame_seconds``), keep the frames from the first to the last with E_k > max_j E_j − θ,
    θ ~ U(min_db, max_db), and zero everything outside; applied to a clip with probability ``p``.

    Unlike :class:`RandomTrim`, what goes is what is quiet: weak fricatives and stop releases at a
    word's edges (the /s/ of "six" sits 20–30 dB below its vowel). Recordings are endpointed by
    different tools at different thresholds — one FSDD speaker's words come cut this way — so the
    model learns to recognise a word with and without its quiet edges.
    """

    level = "wave"

    def __init__(self, min_db: float = 10.0, max_db: float = 25.0, p: float = 0.5,
                 sample_rate: int = 8000, frame_seconds: float = 0.01) -> None:
        self.min_db, self.max_db = _range((min_db, max_db), "endpoint")
        if self.min_db <= 0:
            raise QedgeError(f"endpoint: thresholds are dB below the loudest frame, > 0; got {min_db}")
        if not 0.0 <= p <= 1.0:
            raise QedgeError(f"endpoint: p must be in [0, 1], got {p}")
        self.p = float(p)
        self.frame = max(1, int(round(sample_rate * frame_seconds)))

    def __call__(self, wave: np.ndarray, generator: torch.Generator | None = None) -> np.ndarray:
        apply = _uniform(0.0, 1.0, generator) < self.p
        threshold = _uniform(self.min_db, self.max_db, generator)
        n = wave.shape[0] // self.frame
        if not apply or n < 2:
            return wave
        frames = wave[: n * self.frame].reshape(n, self.frame).astype(np.float64)
        energy = np.mean(np.square(frames), axis=1)
        if energy.max() <= 0.0:
            return wave
        energy_db = 10.0 * np.log10(np.maximum(energy, 1e-30))
        loud = np.flatnonzero(energy_db > energy_db.max() - threshold)
        out = wave.copy()
        out[: loud[0] * self.frame] = 0
        out[(loud[-1] + 1) * self.frame :] = 0
        return out


class RandomGain:
    """x · 10^(g/20), g ~ U(min_db, max_db)."""

    level = "wave"

    def __init__(self, min_db: float = -6.0, max_db: float = 6.0) -> None:
        self.min_db, self.max_db = _range((min_db, max_db), "gain")

    def __call__(self, wave: np.ndarray, generator: torch.Generator | None = None) -> np.ndarray:
        gain_db = _uniform(self.min_db, self.max_db, generator)
        return (wave * np.float32(10.0 ** (gain_db / 20.0))).astype(wave.dtype, copy=False)


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """signal + a·noise with a such that 10·log10(mean(signal²) / mean((a·noise)²)) = snr_db.

    A silent signal (or silent noise) is returned unchanged: the SNR is undefined.
    """
    p_signal = float(np.mean(np.square(signal, dtype=np.float64)))
    p_noise = float(np.mean(np.square(noise, dtype=np.float64)))
    if p_signal <= 0.0 or p_noise <= 0.0:
        return signal
    scale = np.sqrt(p_signal / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (signal + scale * noise).astype(signal.dtype, copy=False)


class AddNoise:
    """Background noise at an SNR drawn from U(snr_db) (dB, signal power over noise power).

    ``noise``: None for white Gaussian noise; a list of waveforms (at the clips' rate); or a
    :class:`~qedge.data.index.ClipIndex` of noise recordings (loaded lazily at ``sample_rate``).
    A random excerpt of a random noise clip is used (tiled when shorter than the signal).
    """

    level = "wave"

    def __init__(
        self,
        snr_db: float | Sequence[float] = (5.0, 20.0),
        noise: Any = None,
        sample_rate: int | None = None,
    ) -> None:
        self.snr_db = _range(snr_db, "snr_db")
        self.sample_rate = sample_rate
        self._index = None
        self._waves: list[np.ndarray] | None = None
        if noise is None:
            pass
        elif hasattr(noise, "clips"):
            if sample_rate is None:
                raise QedgeError("AddNoise with a noise dataset needs sample_rate")
            self._index = noise
            self._cache: dict[int, np.ndarray] = {}
        else:
            self._waves = [np.asarray(w, dtype=np.float32).reshape(-1) for w in noise]
            if not self._waves or any(w.size == 0 for w in self._waves):
                raise QedgeError("AddNoise: noise waveforms must be non-empty")

    def _noise(self, n: int, generator: torch.Generator | None) -> np.ndarray:
        if self._waves is None and self._index is None:
            return torch.randn(n, generator=generator).numpy()
        if self._waves is not None:
            src = self._waves[_randint(0, len(self._waves) - 1, generator)]
        else:
            from qedge.data.index import load_clip_audio

            i = _randint(0, len(self._index.clips) - 1, generator)
            if i not in self._cache:
                self._cache[i] = load_clip_audio(self._index.clips[i], self.sample_rate)
            src = self._cache[i]
        if src.size < n:
            src = np.tile(src, -(-n // src.size))
        start = _randint(0, src.size - n, generator)
        return src[start : start + n]

    def __call__(self, wave: np.ndarray, generator: torch.Generator | None = None) -> np.ndarray:
        snr = _uniform(*self.snr_db, generator)
        return mix_at_snr(wave, self._noise(wave.shape[0], generator), snr)


# ----------------------------------------------------------------------------------------------
# Feature level
# ----------------------------------------------------------------------------------------------
class SpecAugment:
    """Time and mel masking (Park et al. 2019) applied identically to the 4 components.

    Per example: ``time_masks`` masks of width ~U{0..time_width} frames (``time_width`` < 1 is a
    fraction of the frames) and ``freq_masks`` masks of ~U{0..freq_width} mel bins. Masked bins take
    each component's mean over that example (ψ → its mean log-mel, Δk → ≈ 0), so the fill is a
    neutral value for the un-normalised log-mel scale. Works on (4, T, M) or (B, 4, T, M).
    """

    level = "features"

    def __init__(self, time_masks: int = 2, time_width: float = 0.1, freq_masks: int = 2, freq_width: int = 8) -> None:
        if time_masks < 0 or freq_masks < 0 or time_width < 0 or freq_width < 0:
            raise QedgeError("SpecAugment: mask counts and widths must be ≥ 0")
        self.time_masks, self.time_width = int(time_masks), float(time_width)
        self.freq_masks, self.freq_width = int(freq_masks), int(freq_width)

    def masks(self, batch: int, frames: int, mels: int, generator: torch.Generator | None = None,
              device: torch.device | str = "cpu") -> torch.Tensor:
        """Boolean (B, 1, T, M) mask, True where masked."""
        tw = int(round(self.time_width * frames)) if self.time_width < 1 else int(self.time_width)
        mask = torch.zeros(batch, 1, frames, mels, dtype=torch.bool)
        for b in range(batch):
            for _ in range(self.time_masks):
                w = min(_randint(0, tw, generator), frames)
                if w:
                    t0 = _randint(0, frames - w, generator)
                    mask[b, :, t0 : t0 + w, :] = True
            for _ in range(self.freq_masks):
                w = min(_randint(0, self.freq_width, generator), mels)
                if w:
                    f0 = _randint(0, mels - w, generator)
                    mask[b, :, :, f0 : f0 + w] = True
        return mask.to(device)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        single = x.dim() == 3
        xb = x.unsqueeze(0) if single else x
        if xb.dim() != 4 or xb.shape[1] != 4:
            raise ValueError(f"SpecAugment expects (4, T, M) or (B, 4, T, M), got {tuple(x.shape)}")
        mask = self.masks(xb.shape[0], xb.shape[2], xb.shape[3], generator, xb.device)
        fill = xb.mean(dim=(2, 3), keepdim=True)
        out = torch.where(mask, fill.expand_as(xb), xb)
        return out[0] if single else out


# ----------------------------------------------------------------------------------------------
# Batch level
# ----------------------------------------------------------------------------------------------
class Mixup:
    """Mixup (Zhang et al. 2018): x' = λx + (1−λ)x[π], y' = λy + (1−λ)y[π], λ ~ Beta(α, α).

    Single-label integer targets become one-hot first, so y' are soft class probabilities (use
    cross-entropy with probability targets); multi-label multi-hot targets mix to soft multi-hot
    (use BCE). One λ and one permutation π per batch.
    """

    level = "batch"

    def __init__(self, alpha: float = 0.4, num_classes: int | None = None, multilabel: bool = False) -> None:
        if alpha <= 0:
            raise QedgeError(f"mixup alpha must be > 0, got {alpha}")
        self.alpha, self.num_classes, self.multilabel = float(alpha), num_classes, multilabel

    def draw(self, batch: int, generator: torch.Generator | None = None) -> tuple[float, torch.Tensor]:
        """(λ, π) for a batch: λ ~ Beta(α, α), π a random permutation."""
        seed = int(torch.randint(0, 2**62, (), generator=generator).item())
        rng = np.random.default_rng(seed)
        lam = float(rng.beta(self.alpha, self.alpha))
        return lam, torch.from_numpy(rng.permutation(batch))

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None):
        lam, perm = self.draw(x.shape[0], generator)
        perm = perm.to(x.device)
        if y.dim() == 1 and not y.is_floating_point():
            if self.num_classes is None:
                raise QedgeError("mixup of class indices needs num_classes")
            y = torch.nn.functional.one_hot(y, self.num_classes).to(x.dtype)
        y = y.to(x.dtype if x.is_floating_point() else torch.float32)
        return lam * x + (1.0 - lam) * x[perm], lam * y + (1.0 - lam) * y[perm]


class Compose:
    """Apply transforms in order. Per-clip use: ``Compose([...])(x)``; batch transforms take
    ``(x, y)``. ``seed`` gives the composition its own ``torch.Generator`` (for standalone use:
    inside a DataLoader leave it None so each worker draws from its own seeded global RNG)."""

    def __init__(self, transforms: Sequence[Callable], seed: int | None = None) -> None:
        self.transforms = list(transforms)
        self.generator = None
        if seed is not None:
            self.generator = torch.Generator().manual_seed(int(seed))

    def of_level(self, level: str) -> "Compose":
        """The sub-composition of one level, sharing this generator."""
        sub = Compose([t for t in self.transforms if getattr(t, "level", None) == level])
        sub.generator = self.generator
        return sub

    def __bool__(self) -> bool:
        return bool(self.transforms)

    def __call__(self, x: Any, y: Any = None):
        for t in self.transforms:
            if getattr(t, "level", None) == "batch":
                x, y = t(x, y, self.generator)
            else:
                x = t(x, self.generator)
        return x if y is None else (x, y)


def batch_augmenter(
    specaugment: bool | SpecAugment = True,
    mixup: float = 0.0,
    num_classes: int | None = None,
    multilabel: bool = False,
    generator: torch.Generator | None = None,
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The training loop's batch augmentation: ``f(x (B,4,T,M), y) -> (x', y')``.

    SpecAugment (default masks, or the given instance) then mixup with Beta(mixup, mixup) when
    ``mixup > 0``. Targets stay as given without mixup; with it they become soft (float).
    """
    steps: list[Callable] = []
    if specaugment:
        steps.append(specaugment if isinstance(specaugment, SpecAugment) else SpecAugment())
    if mixup and mixup > 0:
        steps.append(Mixup(mixup, num_classes=num_classes, multilabel=multilabel))
    comp = Compose(steps)
    comp.generator = generator

    def apply(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return comp(x, y)

    return apply
