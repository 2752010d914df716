"""qedge.data: dataset indexes, clip loading and caching, the torch Dataset and augmentations.

Torch-free parts load eagerly (indexes, dataset formats, paths, cache: the INT8 calibration tools
use them on devices without torch); :class:`ClipDataset` and :mod:`qedge.data.augment` import torch
on first use.

    index = find_dataset("esc10")            # ClipIndex: 320 clips, 10 labels, folds 1–4
    train, test = index.split()              # ESC: test = highest fold (4)
    ds = ClipDataset(train, FeatureConfig(), clip_seconds=5.0, train=True)
"""

from __future__ import annotations

from typing import Any

from qedge.data.cache import ClipLoader, FeatureCache, crop_or_pad, default_cache_dir
from qedge.data.formats import FORMATS, detect_format, find_dataset
from qedge.data.index import Clip, ClipIndex, clip_content_hash, load_clip_audio
from qedge.data.paths import resolve_data_path, shared_data_root

__all__ = [
    "FORMATS",
    "Clip",
    "ClipIndex",
    "ClipLoader",
    "ClipDataset",
    "FeatureCache",
    "clip_content_hash",
    "crop_or_pad",
    "default_cache_dir",
    "detect_format",
    "find_dataset",
    "load_clip_audio",
    "resolve_data_path",
    "shared_data_root",
    "augment",
]


def __getattr__(name: str) -> Any:
    if name in ("ClipDataset", "longest_clip_seconds"):
        from qedge.data import dataset

        return getattr(dataset, name)
    if name == "augment":
        import importlib

        return importlib.import_module("qedge.data.augment")
    raise AttributeError(f"module 'qedge.data' has no attribute {name!r}")
