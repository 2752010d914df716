"""Errors that reach the user as one line and a non-zero exit code (never a traceback)."""

from __future__ import annotations


class QedgeError(Exception):
    """A problem the user can fix: bad input, a missing file, a missing extra.

    The CLI prints ``str(error)`` on one line and exits with ``exit_code``.
    """

    exit_code: int = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class MissingDependency(QedgeError):
    """An optional dependency is not installed; the message names the extra to install."""

    exit_code = 3

    def __init__(self, module: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the Python package '{module}', which is not installed: "
            f"pip install \"qedge[{extra}]\""
        )


def require(module: str, extra: str, purpose: str):
    """Import ``module`` or raise :class:`MissingDependency` naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised in the torch-free CI venv
        raise MissingDependency(module, extra, purpose) from exc
