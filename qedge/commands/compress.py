"""`qedge compress` (not built yet)."""

from qedge.commands._stub import not_built


def compress() -> None:
    """Not built yet (exits with code 2)."""
    not_built("compress")
