"""Features for calibration and evaluation, and ONNX Runtime's calibration data reader (torch-free).

Each clip is loaded at the model's sample rate, cropped or zero-padded *centred* to the model's
window and turned into the quaternion input (log-mel, Δ1, Δ2, Δ3; design.md §4) by the runtime's
:class:`~qedge.runtime.features.LogMelDeltas` — through :class:`qedge.data.cache.ClipLoader`, the
same code (and on-disk cache) that computes the evaluation features during training. The window
is ``(window_frames − 1)·hop`` samples, which centred framing turns into exactly
``window_frames`` frames (= ``round(clip_seconds · sample_rate)`` samples whenever that is a
multiple of the hop, as for every default clip length).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from qedge.data.cache import ClipLoader
from qedge.data.index import Clip
from qedge.errors import QedgeError
from qedge.runtime.features import FeatureConfig
from qedge.runtime.model_info import INPUT_NAME

__all__ = ["window_samples", "features_array", "FeatureReader"]


def window_samples(config: FeatureConfig, window_frames: int) -> int:
    """Samples whose centred framing yields ``window_frames`` frames: (frames − 1) · hop."""
    if window_frames < 1:
        raise QedgeError(f"window of {window_frames} frames is empty")
    return (int(window_frames) - 1) * config.hop_length


def _config(config: FeatureConfig | Mapping[str, Any]) -> FeatureConfig:
    return config if isinstance(config, FeatureConfig) else FeatureConfig.from_dict(dict(config))


def _as_clip(item: Clip | str | Path) -> Clip:
    return item if isinstance(item, Clip) else Clip(Path(item), ())


def features_array(
    clips: Iterable[Clip | str | Path],
    config: FeatureConfig | Mapping[str, Any],
    window_frames: int,
    cache_dir: str | Path | None | bool = None,
) -> np.ndarray:
    """Features ``(N, 4, window_frames, n_mels)`` of clips (or audio paths) at the model window."""
    cfg = _config(config)
    loader = ClipLoader(cfg, cache_dir)
    n = window_samples(cfg, window_frames)
    items = [loader.fixed_features(_as_clip(c), n) for c in clips]
    if not items:
        raise QedgeError("no audio clips to compute features from")
    out = np.stack(items).astype(np.float32, copy=False)
    if out.shape[2] != window_frames:  # defensive: the framing convention changed under us
        raise QedgeError(f"features have {out.shape[2]} frames, the model window {window_frames}")
    return out


class FeatureReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over clips (duck-typed: ``get_next``).

    Yields ``{"features": (1, 4, window_frames, n_mels)}`` per clip; features are computed on the
    first pass and reused after :meth:`rewind`.
    """

    def __init__(
        self,
        clips: Iterable[Clip | str | Path],
        config: FeatureConfig | Mapping[str, Any],
        window_frames: int,
        input_name: str = INPUT_NAME,
        cache_dir: str | Path | None | bool = None,
    ) -> None:
        self.clips = [_as_clip(c) for c in clips]
        if not self.clips:
            raise QedgeError("the calibration set is empty")
        self.config = _config(config)
        self.window_frames = int(window_frames)
        self.input_name = input_name
        self.cache_dir = cache_dir
        self._cache: np.ndarray | None = None
        self._iter: Iterator[np.ndarray] | None = None

    @classmethod
    def from_arrays(cls, features: np.ndarray, input_name: str = INPUT_NAME) -> "FeatureReader":
        """A reader over precomputed features ``(N, 4, T, M)``."""
        reader = cls.__new__(cls)
        reader.clips, reader.config, reader.input_name, reader.cache_dir = [], None, input_name, None
        reader.window_frames = int(features.shape[2])
        reader._cache = np.ascontiguousarray(features, dtype=np.float32)
        reader._iter = None
        return reader

    def _items(self) -> np.ndarray:
        if self._cache is None:
            self._cache = features_array(self.clips, self.config, self.window_frames, self.cache_dir)
        return self._cache

    def __len__(self) -> int:
        return len(self._cache) if self._cache is not None else len(self.clips)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = iter(self._items())
        item = next(self._iter, None)
        return None if item is None else {self.input_name: item[None]}

    def rewind(self) -> None:
        self._iter = None

    def set_range(self, start_index: int, end_index: int) -> None:  # ORT's optional batching API
        self._iter = iter(self._items()[start_index:end_index])
