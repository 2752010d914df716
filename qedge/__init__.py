"""qedge: quaternion CNNs for audio classification, from training to live tagging on a device.

Importing ``qedge`` is cheap and torch-free: the runtime (``qedge.runtime``) and the calibration
tools (``qedge.calib``) run on devices without torch. Heavy entry points load lazily.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load", "QedgeError"]

from qedge.errors import QedgeError


def __getattr__(name: str) -> Any:
    if name == "load":
        from qedge.checkpoint import load

        return load
    raise AttributeError(f"module 'qedge' has no attribute {name!r}")
