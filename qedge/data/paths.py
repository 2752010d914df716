"""Where datasets live: bundled names ('esc10', 'fsdd') → the shared recordings, or a user path."""

from __future__ import annotations

import os
from pathlib import Path

from qedge.errors import QedgeError

__all__ = ["resolve_data_path", "shared_data_root", "BUNDLED"]

#: Names that resolve to the shared recordings (design.md §1: "embedded defaults").
BUNDLED = ("esc10", "fsdd")


def shared_data_root() -> Path | None:
    """The folder holding the shared recordings, or None.

    ``$QEDGE_DATA`` when set; otherwise the first ``shared/data`` found walking up from the
    package location and then from the current directory (the layout ``<repo>/../shared/data``).
    """
    env = os.environ.get("QEDGE_DATA")
    if env:
        return Path(env).expanduser()
    starts = [Path(__file__).resolve().parent, Path.cwd().resolve()]
    for start in starts:
        for folder in (start, *start.parents):
            candidate = folder / "shared" / "data"
            if candidate.is_dir():
                return candidate
    return None


def resolve_data_path(spec: str | os.PathLike) -> Path:
    """'esc10' / 'fsdd' (or another folder name under the shared root) → its path; else a path.

    Raises :class:`QedgeError` when nothing exists there.
    """
    text = os.fspath(spec)
    if not text:
        raise QedgeError("no dataset given: pass 'esc10', 'fsdd' or a path")
    path = Path(text).expanduser()
    if path.exists():
        return path
    is_name = os.sep not in text and "/" not in text and not text.startswith(".")
    if is_name:
        root = shared_data_root()
        if root is not None and (root / text).exists():
            return root / text
        if text.lower() in BUNDLED:
            where = f"{root}" if root is not None else "no shared/data folder found"
            raise QedgeError(
                f"bundled dataset '{text}' not found ({where}): set QEDGE_DATA to the folder "
                f"holding {text}/ or pass the dataset's path"
            )
    raise QedgeError(f"dataset not found: {text} (neither a path nor one of {', '.join(BUNDLED)})")
