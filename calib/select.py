"""Representative calibration clips: a class-stratified, deterministic pick from the training split.

INT8 scales are only as good as the clips they are measured on: a set that covers every class and
is drawn from the *training* split (never the held-out clips used to report accuracy) is the
recommended practice for static quantization. Dataset listing is
:mod:`qedge.data`'s; the held-out split is the model's (:meth:`qedge.meta.ModelRecord.test_split`:
the fold or speaker it was trained without), else the dataset's default rule (ESC — the highest
fold; FSDD — the last speaker; others — a deterministic 20 %). All of it is torch-free, so this runs
on a device that has only the runtime.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from qedge.data.formats import find_dataset
from qedge.data.index import Clip, ClipIndex
from qedge.errors import QedgeError

if TYPE_CHECKING:  # pragma: no cover
    from qedge.meta import ModelRecord

__all__ = ["stratified", "split_dataset", "select_calibration", "held_out"]


def split_dataset(data: str | Path, record: "ModelRecord | None" = None) -> tuple[ClipIndex, ClipIndex]:
    """(train, held-out) :class:`~qedge.data.index.ClipIndex` of ``data`` (name or folder): the split
    ``record``'s model was trained with (:meth:`~qedge.meta.ModelRecord.test_split`), or the
    dataset's default rule when no record is given."""
    index = find_dataset(data)
    return record.test_split(index) if record is not None else index.split()


def stratified(clips: Sequence[Clip], n: int, seed: int = 0) -> list[Clip]:
    """A class-stratified, deterministic pick of ``n`` clips (stratum = a clip's first label).

    Each class's clips (sorted by path) are shuffled with ``numpy.random.default_rng(seed)``,
    classes in sorted order, then taken round-robin across classes, so every class contributes
    ⌊n/classes⌋ or one more clip (fewer only if it runs out). Same inputs and seed → same clips.
    """
    if n <= 0:
        raise QedgeError(f"calibration size must be positive, got {n}")
    by_label: dict[str, list[Clip]] = defaultdict(list)
    for clip in sorted(clips, key=lambda c: (str(c.path), c.member or 0)):
        by_label[clip.labels[0] if clip.labels else ""].append(clip)
    rng = np.random.default_rng(seed)
    queues = []
    for label in sorted(by_label):
        items = by_label[label]
        queues.append([items[i] for i in rng.permutation(len(items))])
    picked: list[Clip] = []
    depth = 0
    while len(picked) < n and any(depth < len(q) for q in queues):
        for queue in queues:
            if depth < len(queue) and len(picked) < n:
                picked.append(queue[depth])
        depth += 1
    return picked


def select_calibration(data: str | Path, n: int = 64, seed: int = 0,
                       record: "ModelRecord | None" = None) -> list[Clip]:
    """``n`` representative clips of the *training* split of ``data`` (as ``record``'s model was trained)."""
    train, _ = split_dataset(data, record)
    return stratified(list(train), n, seed)


def held_out(data: str | Path, n: int | None = None, seed: int = 0,
             record: "ModelRecord | None" = None) -> tuple[list[Clip], list[str]]:
    """The held-out clips of ``data`` (all, or a stratified ``n``; as ``record``'s model was trained)
    and the dataset's label vocabulary."""
    _, test = split_dataset(data, record)
    clips = list(test) if n is None else stratified(list(test), n, seed)
    return clips, list(test.labels)
