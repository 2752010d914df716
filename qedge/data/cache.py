"""On-disk cache of resampled waveforms and fixed-length clip features (numpy; torch-free).

What is cached, and why:

- the **full resampled waveform** of each clip (key: content hash of the file/HDF5 row + sample
  rate). Decoding (Ogg Vorbis) and polyphase resampling cost more than the features of a crop,
  and keeping the whole clip lets a training set draw a new random crop every epoch.
- the **features of a deterministic crop** (key: content hash + feature config + crop length +
  placement): the centred crop of an evaluation set, and training clips that already have the
  crop length (ESC-10 at 5 s), so epoch two and later runs only read a file.

Keys hash the *content*, not the path: renaming or copying a dataset reuses the entries, and an
edited file is never served stale. ``FEATURE_VERSION`` goes into feature keys; bump it when the
front end's math changes. Files are ``.npy`` written to a temporary name and ``os.replace``d into
place (atomic on POSIX), so concurrent DataLoader workers or runs never read half a file.
Location: ``cache_dir`` argument, else ``$QEDGE_CACHE``, else ``~/.cache/qedge``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from qedge.data.index import Clip, clip_content_hash, load_clip_audio
from qedge.errors import QedgeError
from qedge.runtime.features import FeatureConfig, LogMelDeltas

__all__ = ["FeatureCache", "ClipLoader", "crop_or_pad", "default_cache_dir", "FEATURE_VERSION"]

#: Version of the feature computation; part of every feature key.
FEATURE_VERSION = 1


def default_cache_dir() -> Path:
    """``$QEDGE_CACHE`` or ``~/.cache/qedge``."""
    env = os.environ.get("QEDGE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "qedge"


class FeatureCache:
    """A folder of ``<kind>/<key>.npy`` arrays with atomic writes; counts hits and misses."""

    def __init__(self, cache_dir: str | os.PathLike | None = None) -> None:
        self.root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / f"{key}.npy"

    def get(self, kind: str, key: str) -> np.ndarray | None:
        """The cached array, or None (a missing or unreadable entry is a miss)."""
        p = self.path(kind, key)
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return arr

    def put(self, kind: str, key: str, array: np.ndarray) -> None:
        """Write atomically (temporary file + rename). Cache write failures are not fatal."""
        p = self.path(kind, key)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=p.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
                os.replace(tmp, p)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:  # read-only or full disk: run uncached rather than fail
            pass


def crop_or_pad(wave: np.ndarray, num_samples: int, offset: int | None = None) -> np.ndarray:
    """Fixed-length excerpt of ``wave``.

    Longer clips: ``wave[offset : offset + num_samples]`` (offset None → centred crop,
    (len − n) // 2). Shorter clips: placed at ``offset`` in zeros (None → centred, (n − len) // 2).
    """
    n = int(num_samples)
    size = wave.shape[0]
    if size == n:
        return wave
    if size > n:
        start = (size - n) // 2 if offset is None else int(offset)
        if not 0 <= start <= size - n:
            raise ValueError(f"crop offset {start} outside 0..{size - n}")
        return wave[start : start + n]
    start = (n - size) // 2 if offset is None else int(offset)
    if not 0 <= start <= n - size:
        raise ValueError(f"pad offset {start} outside 0..{n - size}")
    out = np.zeros(n, dtype=wave.dtype)
    out[start : start + size] = wave
    return out


class ClipLoader:
    """Waveforms and fixed-length features of clips, through a :class:`FeatureCache`.

    ``cache_dir=False`` disables the disk cache (everything recomputed).
    """

    def __init__(self, config: FeatureConfig, cache_dir: str | os.PathLike | None | bool = None) -> None:
        self.config = config
        self.extractor = LogMelDeltas(config)
        self.cache = None if cache_dir is False else FeatureCache(None if cache_dir is True else cache_dir)
        self._hashes: dict[tuple[str, int | None], str] = {}
        self._config_key = hashlib.blake2b(
            f"{FEATURE_VERSION}:{config.to_json()}".encode(), digest_size=8
        ).hexdigest()
        self.computed_waveforms = 0
        self.computed_features = 0

    def content_hash(self, clip: Clip) -> str:
        key = (str(clip.path), clip.member)
        h = self._hashes.get(key)
        if h is None:
            h = self._hashes[key] = clip_content_hash(clip)
        return h

    def waveform(self, clip: Clip) -> np.ndarray:
        """The whole clip, float32 mono at the config's sample rate (cached)."""
        sr = self.config.sample_rate
        if self.cache is None:
            self.computed_waveforms += 1
            return load_clip_audio(clip, sr)
        key = f"{self.content_hash(clip)}-{sr}"
        wave = self.cache.get("wave", key)
        if wave is None:
            wave = load_clip_audio(clip, sr)
            self.computed_waveforms += 1
            self.cache.put("wave", key, wave)
        return wave

    def features(self, wave: np.ndarray) -> np.ndarray:
        """Features (4, T, M) of an excerpt (never cached: it may be a random crop)."""
        self.computed_features += 1
        return self.extractor.compute(wave)

    def fixed_features(self, clip: Clip, num_samples: int) -> np.ndarray:
        """Features of the centred fixed-length excerpt (crop or zero-pad) of ``clip`` (cached)."""
        if self.cache is None:
            return self.features(crop_or_pad(self.waveform(clip), num_samples))
        key = f"{self.content_hash(clip)}-{self._config_key}-{int(num_samples)}-c"
        feats = self.cache.get("feat", key)
        if feats is None:
            feats = self.features(crop_or_pad(self.waveform(clip), num_samples))
            self.cache.put("feat", key, feats)
        return feats


def check_clip_seconds(clip_seconds: float, config: FeatureConfig) -> int:
    """Samples of a ``clip_seconds`` excerpt at the config's rate; QedgeError unless > 0."""
    try:
        seconds = float(clip_seconds)
    except (TypeError, ValueError):
        raise QedgeError(f"clip length must be a number of seconds, got {clip_seconds!r}") from None
    n = int(round(seconds * config.sample_rate))
    if not np.isfinite(seconds) or n <= 0:
        raise QedgeError(f"clip length must be > 0 seconds, got {clip_seconds!r}")
    return n
