"""`qedge evaluate` (not built yet)."""

from qedge.commands._stub import not_built


def evaluate() -> None:
    """Not built yet (exits with code 2)."""
    not_built("evaluate")
