"""Dataset discovery and the per-format readers behind :func:`find_dataset`.

``find_dataset(data, format=None)`` resolves ``data`` (a shared set's name such as ``esc10`` /
``fsdd``, or a path), picks the layout (``format``, else :func:`detect_format`) and returns the
:class:`~qedge.data.index.ClipIndex` its reader builds. The formats (:data:`FORMATS`), how each is
recognised, and its default held-out set:

- ``folder``: ``root/<label>/**/*.{wav,flac,ogg,…}`` (one label per top-level sub-folder).
  Recognised by sub-folders with audio below them, once esc, fsdd, gtzan and audioset are ruled out.
  Split: the hash split (:class:`~qedge.data.index.ClipIndex`).
- ``esc``: ESC-50 / ESC-10. Labels from folder names ``"001 - Dog bark" → "Dog bark"`` (the
  karolpiczak/ESC-10 layout) or from ``meta/esc50.csv`` (+ ``audio/``); fold = the ``{fold}-``
  prefix of the file name. Recognised by ``meta/esc50.csv`` or by at least half the sub-folders
  named ``NNN - Label``. Default split: test = the highest fold present.
- ``fsdd``: Free Spoken Digit Dataset ``{digit}_{speaker}_{index}.wav`` (in ``recordings/`` or
  the root), recognised when at least 90 % of the audio files there are so named. fold =
  ``"test"`` for index 0–4 (the dataset's own rule), else ``"train"``. Default split: hold out one
  speaker, the last in sorted order (``yweweler`` on the shared set); ``split(test_speaker=...)``
  picks another, ``split(test_fold="test")`` applies the index rule.
- ``gtzan``: ``genres/<genre>/*`` (or ``genres_original/``, or genre folders in the root),
  recognised by a ``genres``/``genres_original`` sub-folder or at least three sub-folders named
  after GTZAN genres. Split: the hash split.
- ``audioset``: a segments CSV (``YTID, start_seconds, end_seconds, "mid1,mid2"``) with a folder
  of clips named ``YTID…`` / ``YYTID…``, or PANNs packed HDF5 files (``audio_name``, ``waveform``
  int16 at 32 kHz, ``target`` multi-hot). Recognised by an ``.h5``/``.hdf5`` file, or a CSV whose
  first 2 KB mention ``YTID``, ``positive_labels`` or ``# Segments csv`` (given directly or in the
  folder). Label names come from ``class_labels_indices.csv`` (``index,mid,display_name``) beside
  the data when present. Multi-label; fold = CSV/HDF5 stem (``eval`` files are the default test set).
- ``csv``: rows ``path,label[,fold]`` (header optional; paths relative to the CSV); several
  labels per clip separated by ``;`` or ``|`` make the set multi-label. Recognised by any other
  ``.csv`` file, or a folder holding exactly one ``.csv`` (checked last).

A folder is tried as esc, fsdd, gtzan, audioset, folder, csv in that order. Torch-free; imports
:mod:`qedge.data.index`, never the other way round.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np

from qedge.data.index import Clip, ClipIndex, _h5py
from qedge.data.paths import resolve_data_path
from qedge.errors import QedgeError
from qedge.runtime.audio import AUDIO_EXTENSIONS

__all__ = ["FORMATS", "detect_format", "find_dataset"]

FORMATS = ("folder", "esc", "fsdd", "gtzan", "audioset", "csv")
GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")

_ESC_DIR = re.compile(r"^\d{3} - (.+)$")
_ESC_FILE = re.compile(r"^(\d+)-([^-]+)-([A-Za-z0-9]+)$")
_FSDD_FILE = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)$")


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def _audio_files_below(folder: Path) -> list[Path]:
    """Audio files in ``folder`` and its sub-folders (hidden entries skipped), sorted."""
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def detect_format(path: Path) -> str:
    """Guess the layout of ``path`` (one of :data:`FORMATS`); :class:`QedgeError` if none fits."""
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".h5", ".hdf5"):
            return "audioset"
        if suffix == ".csv":
            return "audioset" if _looks_like_segments_csv(path) else "csv"
        raise QedgeError(f"cannot use {path} as a dataset: expected a folder, a .csv or an .h5 file")
    if not path.is_dir():
        raise QedgeError(f"dataset not found: {path}")
    if (path / "meta" / "esc50.csv").is_file():
        return "esc"
    subdirs = _subdirs(path)
    if subdirs and sum(bool(_ESC_DIR.match(d.name)) for d in subdirs) >= max(1, len(subdirs) // 2):
        return "esc"
    rec = path / "recordings" if (path / "recordings").is_dir() else path
    files = _audio_files(rec)
    if files and sum(bool(_FSDD_FILE.match(f.stem)) for f in files) >= 0.9 * len(files):
        return "fsdd"
    names = {d.name.lower() for d in subdirs}
    if {"genres", "genres_original"} & names or (len(names & set(GTZAN_GENRES)) >= 3):
        return "gtzan"
    if any(p.suffix.lower() in (".h5", ".hdf5") for p in path.iterdir()) or any(
        _looks_like_segments_csv(p) for p in path.glob("*.csv")
    ):
        return "audioset"
    if subdirs and any(_audio_files_below(d) for d in subdirs):
        return "folder"
    csvs = sorted(path.glob("*.csv"))
    if len(csvs) == 1:
        return "csv"
    raise QedgeError(
        f"cannot tell the layout of {path}: expected <label>/ folders of audio, an ESC/FSDD/GTZAN/"
        f"AudioSet layout or a CSV of path,label (pass --format)"
    )


def _looks_like_segments_csv(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(2048)
    except OSError:
        return False
    return "YTID" in head or "positive_labels" in head or "# Segments csv" in head


def find_dataset(data: str | os.PathLike, format: str | None = None) -> ClipIndex:
    """Index a dataset: ``data`` is 'esc10' / 'fsdd' (the shared recordings) or a path.

    ``format`` is one of :data:`FORMATS` or None to auto-detect. Raises :class:`QedgeError` for an
    unknown format, a missing path or a dataset without clips.
    """
    path = resolve_data_path(data)
    if format is not None:
        format = format.lower()
        if format in ("esc10", "esc50"):
            format = "esc"
        if format not in FORMATS:
            raise QedgeError(f"unknown dataset format '{format}' (one of {', '.join(FORMATS)})")
    fmt = format or detect_format(path)
    reader = {
        "folder": _read_folder,
        "esc": _read_esc,
        "fsdd": _read_fsdd,
        "gtzan": _read_gtzan,
        "audioset": _read_audioset,
        "csv": _read_csv,
    }[fmt]
    index = reader(path)
    if not index.clips:
        raise QedgeError(f"no audio clips found in {path} (format {fmt})")
    if not index.labels:
        raise QedgeError(f"no labels found in {path} (format {fmt})")
    return index


def _read_folder(root: Path) -> ClipIndex:
    if not root.is_dir():
        raise QedgeError(f"folder dataset must be a directory: {root}")
    clips = [Clip(f, (d.name,)) for d in _subdirs(root) for f in _audio_files_below(d)]
    return ClipIndex(clips, format="folder", root=root)


def _read_esc(root: Path) -> ClipIndex:
    if not root.is_dir():
        raise QedgeError(f"ESC dataset must be a directory: {root}")
    meta = root / "meta" / "esc50.csv"
    clips: list[Clip] = []
    if meta.is_file():
        audio = root / "audio"
        with open(meta, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                try:
                    f = audio / row["filename"]
                    clips.append(Clip(f, (row["category"],), int(row["fold"])))
                except (KeyError, ValueError) as exc:
                    raise QedgeError(f"{meta}: malformed row {row} ({exc})") from None
        missing = [c.path for c in clips if not c.path.is_file()]
        if missing:
            raise QedgeError(f"{meta} lists {len(missing)} missing file(s), e.g. {missing[0]}")
    else:
        for d in _subdirs(root):
            m = _ESC_DIR.match(d.name)
            label = m.group(1) if m else d.name
            for f in _audio_files(d):
                fm = _ESC_FILE.match(f.stem)
                clips.append(Clip(f, (label,), int(fm.group(1)) if fm else None))
    folds = sorted({c.fold for c in clips if c.fold is not None})
    return ClipIndex(clips, format="esc", root=root, default_test={"fold": folds[-1]} if len(folds) > 1 else {})


def _read_fsdd(root: Path) -> ClipIndex:
    rec = root / "recordings" if (root / "recordings").is_dir() else root
    if not rec.is_dir():
        raise QedgeError(f"FSDD dataset must be a directory: {root}")
    clips = []
    for f in _audio_files(rec):
        m = _FSDD_FILE.match(f.stem)
        if not m:
            continue
        digit, speaker, idx = m.group(1), m.group(2), int(m.group(3))
        clips.append(Clip(f, (digit,), "test" if idx <= 4 else "train", speaker))
    speakers = sorted({c.speaker for c in clips})
    default = {"speaker": speakers[-1]} if len(speakers) > 1 else ({"fold": "test"} if clips else {})
    return ClipIndex(clips, format="fsdd", root=root, default_test=default)


def _read_gtzan(root: Path) -> ClipIndex:
    base = root
    for sub in ("genres", "genres_original", "Data/genres_original"):
        if (root / sub).is_dir():
            base = root / sub
            break
    clips = [Clip(f, (d.name,)) for d in _subdirs(base) for f in _audio_files_below(d)]
    return ClipIndex(clips, format="gtzan", root=base)


def _split_labels(text: str) -> tuple[str, ...]:
    parts = re.split(r"[;|]", text)
    return tuple(sorted({p.strip() for p in parts if p.strip()}))


def _read_csv(path: Path) -> ClipIndex:
    if path.is_dir():
        csvs = sorted(path.glob("*.csv"))
        if len(csvs) != 1:
            raise QedgeError(f"{path}: expected exactly one .csv of path,label[,fold] rows, found {len(csvs)}")
        path = csvs[0]
    base = path.parent
    clips: list[Clip] = []
    multi = False
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    for lineno, row in enumerate(rows, start=1):
        row = [c.strip() for c in row]
        if not row or not any(row) or row[0].startswith("#"):
            continue
        if lineno == 1 and row[0].lower() in ("path", "file", "filename", "audio"):
            continue
        if len(row) < 2:
            raise QedgeError(f"{path}:{lineno}: expected path,label[,fold], got {','.join(row)!r}")
        f = Path(row[0]).expanduser()
        f = f if f.is_absolute() else base / f
        if not f.is_file():
            raise QedgeError(f"{path}:{lineno}: audio file not found: {f}")
        labels = _split_labels(row[1])
        if not labels:
            raise QedgeError(f"{path}:{lineno}: empty label")
        multi = multi or len(labels) > 1 or bool(re.search(r"[;|]", row[1]))
        fold: int | str | None = None
        if len(row) > 2 and row[2]:
            fold = int(row[2]) if re.fullmatch(r"-?\d+", row[2]) else row[2]
        clips.append(Clip(f, labels, fold))
    return ClipIndex(clips, multilabel=multi, format="csv", root=base)


# -- AudioSet -------------------------------------------------------------------------------------
def _class_names(search: Iterable[Path]) -> tuple[dict[str, str], list[str]]:
    """mid → display name, and names by index, from the first class_labels_indices.csv found."""
    for folder in search:
        f = folder / "class_labels_indices.csv"
        if f.is_file():
            by_mid, by_index = {}, []
            with open(f, newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    by_mid[row["mid"]] = row["display_name"]
                    by_index.append(row["display_name"])
            return by_mid, by_index
    return {}, []


def _read_audioset(path: Path) -> ClipIndex:
    if path.is_file():
        folder = path.parent
        sources = [path]
    else:
        folder = path
        sources = sorted(p for p in path.iterdir() if p.suffix.lower() in (".h5", ".hdf5"))
        sources += sorted(p for p in path.glob("*.csv") if _looks_like_segments_csv(p))
    by_mid, by_index = _class_names([folder, folder.parent, folder / "metadata"])
    clips: list[Clip] = []
    missing = 0
    vocabulary: list[str] = []
    for src in sources:
        if src.suffix.lower() in (".h5", ".hdf5"):
            new, names = _read_audioset_h5(src, by_index)
            vocabulary = vocabulary or names
        else:
            new, gone = _read_segments_csv(src, by_mid)
            missing += gone
        clips.extend(new)
    folds = {c.fold for c in clips}
    eval_folds = sorted(f for f in folds if isinstance(f, str) and "eval" in f.lower())
    default = {"fold": eval_folds[0]} if eval_folds and len(folds) > 1 else {}
    labels = sorted(set(vocabulary) | {lab for c in clips for lab in c.labels}) if clips else []
    index = ClipIndex(clips, labels=labels, multilabel=True, format="audioset", root=folder, default_test=default)
    index.missing = missing
    return index


def _fold_name(src: Path) -> str:
    stem = src.stem
    for suffix in ("_segments", "_waveform", "_waveforms"):
        stem = stem.replace(suffix, "")
    return stem


def _read_segments_csv(src: Path, by_mid: dict[str, str]) -> tuple[list[Clip], int]:
    folder = src.parent
    audio_dirs = [d for d in (folder / _fold_name(src), folder / "audio", folder) if d.is_dir()]
    files: dict[str, Path] = {}
    for d in audio_dirs:
        for f in _audio_files(d):
            stem = f.stem
            for key in {stem, stem[1:] if stem.startswith("Y") else stem, stem[:11]}:
                files.setdefault(key, f)
    clips, missing = [], 0
    with open(src, newline="", encoding="utf-8") as fh:
        reader = csv.reader((line for line in fh if not line.startswith("#")), skipinitialspace=True)
        for row in reader:
            if len(row) < 4:
                continue
            ytid = row[0].strip()
            labels = tuple(sorted({by_mid.get(m.strip(), m.strip()) for m in row[3].split(",") if m.strip()}))
            f = files.get(ytid) or files.get(f"{ytid}_{row[1].strip()}")
            if f is None:
                missing += 1
                continue
            clips.append(Clip(f, labels, _fold_name(src), name=ytid))
    return clips, missing


def _read_audioset_h5(src: Path, by_index: list[str]) -> tuple[list[Clip], list[str]]:
    h5py = _h5py()
    try:
        with h5py.File(src, "r") as h5:
            for key in ("audio_name", "waveform", "target"):
                if key not in h5:
                    raise QedgeError(f"{src}: not a PANNs packed AudioSet file (no '{key}' dataset)")
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in h5["audio_name"][:]]
            target = np.asarray(h5["target"][:], dtype=bool)
    except OSError as exc:
        raise QedgeError(f"cannot read HDF5 file {src}: {exc}") from None
    n_classes = target.shape[1]
    vocab = by_index if len(by_index) == n_classes else [f"class_{i:03d}" for i in range(n_classes)]
    fold = _fold_name(src)
    clips = [
        Clip(src, tuple(vocab[j] for j in np.flatnonzero(target[i])), fold, member=i, name=names[i])
        for i in range(len(names))
    ]
    return clips, list(vocab)
