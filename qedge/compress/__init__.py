"""qedge.compress: quaternion-granular filter pruning, distillation and compression reports
(design.md §6).

- :mod:`qedge.compress.scores` — ``filter_scores(layer, method)``: l1, opnorm, gm, spectral;
- :mod:`qedge.compress.prune` — ``prune(model, method, ratio, layers, example_input, round_to)``;
- :mod:`qedge.compress.distill` — ``kd_loss`` and the KD-only baseline;
- :mod:`qedge.compress.report` — ``write_report`` (Markdown/JSON/PNG) and ``measure_latency``;
- :mod:`qedge.compress.pipeline` — one prune → fine-tune → measure run (behind ``qedge compress``).

Submodules load on first use (``qedge.train`` imports ``distill`` without Torch-Pruning).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["filter_scores", "prune", "kd_loss", "write_report", "measure_latency"]

_HOME = {"filter_scores": "scores", "prune": "prune", "kd_loss": "distill", "write_report": "report",
         "measure_latency": "report"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"qedge.compress.{_HOME[name]}"), name)
    raise AttributeError(f"module 'qedge.compress' has no attribute {name!r}")
