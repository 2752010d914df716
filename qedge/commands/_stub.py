"""Placeholder for commands that are not built yet: says so plainly and exits with code 2."""

from qedge.errors import QedgeError


def not_built(name: str) -> None:
    raise QedgeError(f"'qedge {name}' is not built yet", exit_code=2)
