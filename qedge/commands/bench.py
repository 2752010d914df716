"""`qedge bench` (not built yet)."""

from qedge.commands._stub import not_built


def bench() -> None:
    """Not built yet (exits with code 2)."""
    not_built("bench")
