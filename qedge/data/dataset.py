"""``ClipDataset``: a torch Dataset of fixed-length clip features and targets."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from qedge.data.augment import Compose
from qedge.data.cache import ClipLoader, check_clip_seconds, crop_or_pad
from qedge.data.index import AUDIOSET_H5_RATE, Clip, ClipIndex
from qedge.errors import QedgeError
from qedge.runtime.features import FeatureConfig

__all__ = ["ClipDataset", "longest_clip_seconds"]


class ClipDataset(Dataset):
    """Items ``(features float32 (4, T, M), target)`` of a :class:`ClipIndex`.

    Every clip is cut to ``clip_seconds`` on the waveform (at ``config.sample_rate``) before the
    numpy :class:`~qedge.runtime.features.LogMelDeltas` runs, so T = config.num_frames(n) for all:
    training draws a random crop of longer clips (and a random placement of shorter ones in
    zeros) from torch's RNG; evaluation takes the centred crop (shorter clips centred in zeros).
    ``clip_seconds=None``: the longest clip of the index.

    target: int64 class index (single-label) or float32 multi-hot (multi-label), over ``labels``
    (default: the index's vocabulary; pass a model's labels to evaluate it). Augmentations
    (``augment``, training only): waveform-level transforms run before the features,
    feature-level ones after; batch-level ones (mixup) belong in the training loop
    (:func:`qedge.data.augment.batch_augmenter`).
    Caching: see :mod:`qedge.data.cache` (``cache_dir=False`` turns it off).

    event_crops (training): random crops of a longer clip hold at least half of its sounding
    part, or half the crop when the sound is longer (:func:`qedge.data.background.sounding_span`):
    a crop of a clip's digital-silence padding would teach that silence is its class.
    """

    def __init__(
        self,
        index: ClipIndex,
        config: FeatureConfig | dict | None = None,
        clip_seconds: float | None = None,
        train: bool = False,
        cache_dir: str | os.PathLike | None | bool = None,
        augment: Compose | Sequence[Any] | None = None,
        labels: Sequence[str] | None = None,
        event_crops: bool = False,
    ) -> None:
        if not isinstance(index, ClipIndex) or not index.clips:
            raise QedgeError("ClipDataset needs a non-empty ClipIndex")
        if config is None:
            config = FeatureConfig()
        elif not isinstance(config, FeatureConfig):
            config = FeatureConfig.from_dict(config)
        self.index = index
        self.clips: list[Clip] = list(index.clips)
        self.config = config
        self.train = bool(train)
        self.event_crops = bool(event_crops)
        self.multilabel = index.multilabel
        self.labels = list(labels) if labels is not None else list(index.labels)
        self._label_ids = {lab: i for i, lab in enumerate(self.labels)}
        unknown = sorted({lab for c in self.clips for lab in c.labels} - set(self._label_ids))
        if unknown:
            raise QedgeError(
                f"dataset labels not in the model's label list: {', '.join(unknown[:5])}"
                + (" …" if len(unknown) > 5 else "")
            )
        if not self.multilabel and any(len(c.labels) != 1 for c in self.clips):
            raise QedgeError("single-label dataset has clips without exactly one label")
        if clip_seconds is None:
            clip_seconds = longest_clip_seconds(self.clips)
        self.clip_seconds = float(clip_seconds)
        self.num_samples = check_clip_seconds(clip_seconds, config)
        self.num_frames = config.num_frames(self.num_samples)
        self.loader = ClipLoader(config, cache_dir)
        if augment is None:
            augment = Compose([])
        elif not isinstance(augment, Compose):
            augment = Compose(list(augment) if isinstance(augment, (list, tuple)) else [augment])
        if any(getattr(t, "level", None) == "batch" for t in augment.transforms):
            raise QedgeError("batch augmentations (mixup) go to the training loop, not to ClipDataset")
        self._wave_aug = augment.of_level("wave")
        self._feat_aug = augment.of_level("features")

    # -- shapes -----------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """(4, frames, n_mels) of every item."""
        return (4, self.num_frames, self.config.n_mels)

    @property
    def task(self) -> str:
        return "multi-label" if self.multilabel else "single-label"

    def __len__(self) -> int:
        return len(self.clips)

    # -- items ------------------------------------------------------------------------------------
    def target(self, i: int) -> torch.Tensor:
        """int64 class index, or float32 multi-hot over ``labels``."""
        clip = self.clips[i]
        if self.multilabel:
            y = torch.zeros(len(self.labels), dtype=torch.float32)
            for lab in clip.labels:
                y[self._label_ids[lab]] = 1.0
            return y
        return torch.tensor(self._label_ids[clip.labels[0]], dtype=torch.int64)

    def targets(self) -> np.ndarray:
        """All targets: (N,) int64 or (N, C) float32."""
        return torch.stack([self.target(i) for i in range(len(self))]).numpy()

    def features(self, i: int) -> np.ndarray:
        """Features of item ``i`` as numpy (4, T, M) float32 (the crop rule of the dataset, no
        feature-level augmentation)."""
        clip = self.clips[i]
        n = self.num_samples
        if not self.train:
            return self.loader.fixed_features(clip, n)
        wave = self.loader.waveform(clip)
        if wave.shape[0] == n and not self._wave_aug:
            return self.loader.fixed_features(clip, n)
        lo, hi = self._crop_offsets(wave, n)
        offset = int(torch.randint(lo, hi + 1, ()).item()) if hi > lo else lo
        excerpt = crop_or_pad(wave, n, offset)
        if self._wave_aug:
            excerpt = self._wave_aug(np.array(excerpt, dtype=np.float32, copy=True))
        return self.loader.features(excerpt)

    def _crop_offsets(self, wave: np.ndarray, n: int) -> tuple[int, int]:
        """Inclusive range of training crop (or padding) offsets for ``wave``."""
        size = wave.shape[0]
        span = abs(size - n)
        if not self.event_crops or size <= n:
            return 0, span
        from qedge.data.background import sounding_span

        a, b = sounding_span(wave)
        if b <= a:
            return 0, span
        need = min(n, b - a) // 2  # overlap of crop [o, o+n) with [a, b) must reach this
        lo, hi = max(0, a + need - n), min(span, b - need)
        return (lo, hi) if hi >= lo else (0, span)

    def warm_cache(self, progress: bool = True, description: str = "caching clips") -> int:
        """Decode/resample every clip (and compute its features where the crop is deterministic)
        into the disk cache now, with a rich progress bar; returns the number of clips.

        Optional: items fill the cache on first access anyway. Useful before multi-worker
        training so workers start from a warm cache.
        """
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        n = self.num_samples
        cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*cols, transient=True, disable=not progress) as bar:
            task = bar.add_task(description, total=len(self.clips))
            for clip in self.clips:
                wave = self.loader.waveform(clip)
                if not self.train or (wave.shape[0] == n and not self._wave_aug):
                    self.loader.fixed_features(clip, n)
                bar.advance(task)
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(self.features(i), dtype=np.float32))
        if self.train and self._feat_aug:
            x = self._feat_aug(x)
        return x, self.target(i)


def longest_clip_seconds(clips: Sequence[Clip]) -> float:
    """Duration of the longest clip, from file headers (HDF5: row length at 32 kHz)."""
    import soundfile as sf

    longest = 0.0
    h5_seen: set[str] = set()
    for clip in clips:
        if clip.member is not None:
            if str(clip.path) in h5_seen:
                continue
            h5_seen.add(str(clip.path))
            from qedge.data.index import _h5py

            with _h5py().File(clip.path, "r") as h5:
                rate = int(h5.attrs.get("sample_rate", AUDIOSET_H5_RATE))
                longest = max(longest, h5["waveform"].shape[1] / rate)
            continue
        try:
            info = sf.info(str(clip.path))
        except (sf.SoundFileError, RuntimeError) as exc:
            raise QedgeError(f"cannot read audio file {clip.path}: {' '.join(str(exc).split())}") from None
        longest = max(longest, info.frames / info.samplerate)
    if longest <= 0:
        raise QedgeError("cannot infer a clip length: every clip is empty")
    return longest
