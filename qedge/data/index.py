"""Dataset indexes: the clips a dataset holds (labels, folds, speakers), the held-out split, and
reading one clip's audio.

Torch-free (the INT8 calibration tools select clips with it). :class:`ClipIndex` is what
:func:`qedge.data.formats.find_dataset` returns for every layout (the formats, how each is
recognised and its default held-out set are described in :mod:`qedge.data.formats`).

Sets without folds or speakers (folder, gtzan, csv without folds) split deterministically: per
label, clips sorted by a hash of their relative path, every fifth one is test (20 %).

The validation split (:meth:`ClipIndex.validation_split`) carves epoch-selection clips out of the
training half the same deterministic way, keeping the takes of one source recording together.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from qedge.errors import QedgeError
from qedge.runtime.audio import load_audio, resample

__all__ = [
    "Clip",
    "ClipIndex",
    "load_clip_audio",
    "clip_content_hash",
]

#: Sample rate of PANNs packed AudioSet HDF5 waveforms (unless the file has a ``sample_rate`` attr).
AUDIOSET_H5_RATE = 32000


@dataclass(frozen=True)
class Clip:
    """One clip: ``path`` (audio file, or the HDF5 file when ``member`` is its row), ``labels``
    (tuple of class names), ``fold`` (int or str, or None), ``speaker`` (or None), ``name``."""

    path: Path
    labels: tuple[str, ...]
    fold: int | str | None = None
    speaker: str | None = None
    member: int | None = None
    name: str = ""

    @property
    def id(self) -> str:
        """A readable identifier: the HDF5 ``audio_name`` or the file name."""
        return self.name or (f"{self.path.name}[{self.member}]" if self.member is not None else self.path.name)


@dataclass
class ClipIndex:
    """A dataset's clips and label vocabulary.

    ``labels``: sorted vocabulary (the parent's vocabulary is kept by :meth:`split`, so train and
    test share class indices). ``multilabel``: clips may carry several labels. ``format``/``root``:
    where it came from. ``default_test``: how :meth:`split` splits when not told.
    """

    clips: list[Clip]
    labels: list[str] = field(default_factory=list)
    multilabel: bool = False
    format: str = "folder"
    root: Path | None = None
    default_test: dict = field(default_factory=dict)
    missing: int = 0

    def __post_init__(self) -> None:
        if not self.labels:
            self.labels = sorted({lab for c in self.clips for lab in c.labels})
        if not self.multilabel:
            self.multilabel = any(len(c.labels) != 1 for c in self.clips)

    def __len__(self) -> int:
        return len(self.clips)

    def __iter__(self) -> Iterator[Clip]:
        return iter(self.clips)

    def __getitem__(self, i: int) -> Clip:
        return self.clips[i]

    @property
    def task(self) -> str:
        """``"multi-label"`` or ``"single-label"`` (the checkpoint/ONNX ``task``)."""
        return "multi-label" if self.multilabel else "single-label"

    @property
    def folds(self) -> list:
        """Distinct folds present (sorted)."""
        return sorted({c.fold for c in self.clips if c.fold is not None}, key=lambda f: (str(type(f)), f))

    @property
    def speakers(self) -> list[str]:
        """Distinct speakers present (sorted)."""
        return sorted({c.speaker for c in self.clips if c.speaker is not None})

    def counts(self) -> dict[str, int]:
        """Clips per label."""
        counter = Counter(lab for c in self.clips for lab in c.labels)
        return {lab: counter.get(lab, 0) for lab in self.labels}

    def subset(self, clips: Iterable[Clip]) -> "ClipIndex":
        """Same vocabulary and format, other clips."""
        return ClipIndex(
            list(clips), labels=list(self.labels), multilabel=self.multilabel, format=self.format,
            root=self.root, default_test=dict(self.default_test),
        )

    def split(
        self, test_fold: int | str | None = None, test_speaker: str | None = None
    ) -> tuple["ClipIndex", "ClipIndex"]:
        """(train, test): test = clips of ``test_speaker`` or of ``test_fold``; by default the
        format's held-out set (ESC: highest fold; FSDD: the last speaker; AudioSet: ``eval``;
        others: a deterministic 20 % per label). Raises :class:`QedgeError` if either side is empty.
        """
        if test_speaker is not None:
            if test_speaker not in self.speakers:
                raise QedgeError(
                    f"speaker '{test_speaker}' not in this dataset (speakers: {', '.join(self.speakers) or 'none'})"
                )
            is_test = [c.speaker == test_speaker for c in self.clips]
            what = f"speaker {test_speaker}"
        elif test_fold is not None:
            wanted = str(test_fold)
            if wanted not in {str(f) for f in self.folds}:
                raise QedgeError(
                    f"fold '{test_fold}' not in this dataset (folds: {', '.join(map(str, self.folds)) or 'none'})"
                )
            is_test = [str(c.fold) == wanted for c in self.clips]
            what = f"fold {test_fold}"
        elif self.default_test.get("speaker") is not None:
            return self.split(test_speaker=self.default_test["speaker"])
        elif self.default_test.get("fold") is not None:
            return self.split(test_fold=self.default_test["fold"])
        elif self.folds and all(isinstance(f, int) for f in self.folds) and len(self.folds) > 1:
            return self.split(test_fold=self.folds[-1])
        elif any(str(f).lower() in ("test", "eval", "evaluation", "val", "valid", "validation") for f in self.folds):
            named = [f for f in self.folds if str(f).lower() in ("test", "eval", "evaluation", "val", "valid", "validation")]
            return self.split(test_fold=named[0])
        else:
            is_test = _hash_split(self.clips, self.root)
            what = "the hash split"
        train = [c for c, t in zip(self.clips, is_test) if not t]
        test = [c for c, t in zip(self.clips, is_test) if t]
        if not train or not test:
            raise QedgeError(
                f"split by {what} leaves {'no training' if not train else 'no test'} clips "
                f"({len(self.clips)} clips in {self.root or 'the dataset'})"
            )
        return self.subset(train), self.subset(test)

    def validation_split(self, fraction: float) -> tuple["ClipIndex", "ClipIndex"]:
        """(fit, validation): about ``fraction`` of each label's source recordings, chosen by a
        stable hash of their names (the same clips on every machine and every run), go to
        validation. A source recording is a clip, or for ESC names ``FOLD-SOURCE-TAKE`` every
        take of one source, so no recording is on both sides. Each label with at least two
        sources gives at least one; ``fraction = 0`` gives an empty validation half.
        Epochs are chosen on validation, never on the held-out test split."""
        if not 0.0 <= fraction < 1.0:
            raise QedgeError(f"validation fraction must be in [0, 1), got {fraction}")
        if fraction == 0.0:
            return self.subset(self.clips), self.subset([])
        by_label: dict[tuple[str, ...], dict[str, list[int]]] = {}
        for i, c in enumerate(self.clips):
            by_label.setdefault(c.labels[:1], {}).setdefault(_source_key(c), []).append(i)
        is_val = [False] * len(self.clips)
        for sources in by_label.values():
            if len(sources) < 2:
                continue
            take = min(len(sources) - 1, max(1, math.floor(fraction * len(sources) + 0.5)))
            for key in sorted(sources, key=lambda k: (_stable_hash(k), k))[:take]:
                for i in sources[key]:
                    is_val[i] = True
        return (self.subset(c for c, v in zip(self.clips, is_val) if not v),
                self.subset(c for c, v in zip(self.clips, is_val) if v))

    def describe(self) -> str:
        """One line: format, clips, classes, folds/speakers."""
        parts = [f"{self.format}: {len(self.clips)} clips, {len(self.labels)} labels"]
        if self.multilabel:
            parts.append("multi-label")
        if self.folds:
            parts.append(f"folds {', '.join(map(str, self.folds))}")
        if self.speakers:
            parts.append(f"speakers {', '.join(self.speakers)}")
        return "; ".join(parts)


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


_ESC_TAKE = re.compile(r"^(\d+-\d+)-[A-Za-z]+$")


def _source_key(clip: Clip) -> str:
    """The recording a clip was cut from: ``1-100032`` for ESC's ``1-100032-A``, else the clip."""
    match = _ESC_TAKE.match(clip.path.stem)
    base = match.group(1) if match else clip.path.stem
    return f"{base}#{clip.member}" if clip.member is not None else base


def _hash_split(clips: Sequence[Clip], root: Path | None) -> list[bool]:
    def key(c: Clip) -> str:
        try:
            rel = c.path.relative_to(root) if root is not None and root.is_dir() else c.path.name
        except ValueError:
            rel = c.path.name
        return f"{rel}#{c.member}" if c.member is not None else str(rel).replace(os.sep, "/")

    groups: dict[tuple[str, ...], list[int]] = {}
    for i, c in enumerate(clips):
        groups.setdefault(c.labels[:1], []).append(i)
    is_test = [False] * len(clips)
    for members in groups.values():
        ranked = sorted(members, key=lambda i: (_stable_hash(key(clips[i])), i))
        for pos, i in enumerate(ranked):
            is_test[i] = pos % 5 == 4
    return is_test


def _h5py():
    from qedge.errors import require

    return require("h5py", "train", "Reading AudioSet HDF5 files")


# ----------------------------------------------------------------------------------------------
# Reading a clip
# ----------------------------------------------------------------------------------------------
def load_clip_audio(clip: Clip, sample_rate: int) -> np.ndarray:
    """The clip's waveform, float32 mono at ``sample_rate`` (files via ``load_audio``; HDF5 rows
    as int16/32767 at 32 kHz or the file's ``sample_rate`` attribute)."""
    if clip.member is None:
        return load_audio(clip.path, sample_rate)
    h5py = _h5py()
    try:
        with h5py.File(clip.path, "r") as h5:
            wave = np.asarray(h5["waveform"][clip.member])
            rate = int(h5.attrs.get("sample_rate", AUDIOSET_H5_RATE))
    except (OSError, KeyError, IndexError) as exc:
        raise QedgeError(f"cannot read clip {clip.id} from {clip.path}: {exc}") from None
    x = wave.astype(np.float32) / 32767.0 if wave.dtype.kind in "iu" else wave.astype(np.float32)
    if not np.isfinite(x).all():
        raise QedgeError(f"clip {clip.id} in {clip.path} contains NaN or infinite samples")
    return resample(x, rate, sample_rate) if rate != sample_rate else x


def clip_content_hash(clip: Clip) -> str:
    """Hex digest of the clip's bytes (the file, or the HDF5 row): the cache key's identity part."""
    h = hashlib.blake2b(digest_size=16)
    if clip.member is None:
        try:
            with open(clip.path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        except OSError as exc:
            raise QedgeError(f"cannot read audio file {clip.path}: {exc.strerror or exc}") from None
    else:
        h5py = _h5py()
        with h5py.File(clip.path, "r") as h5:
            h.update(np.ascontiguousarray(h5["waveform"][clip.member]).tobytes())
            h.update(str(h5.attrs.get("sample_rate", AUDIOSET_H5_RATE)).encode())
    return h.hexdigest()
