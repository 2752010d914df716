"""`qedge export` (not built yet)."""

from qedge.commands._stub import not_built


def export() -> None:
    """Not built yet (exits with code 2)."""
    not_built("export")
