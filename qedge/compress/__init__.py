"""qedge.compress: quaternion-granular filter pruning, distillation and compression reports
(design.md §6).

- :mod:`qedge.compress.scores` — ``filter_scores(layer, method)``: opnorm, l1, gm, spectral, random,
  and any criterion added with ``register_importance(name)`` (the ``IMPORTANCES`` registry);
- :mod:`qedge.compress.prune` — ``prune(model, method, ratio, layers, example_input, round_to)``;
- :mod:`qedge.compress.distill` — ``kd_loss`` and the KD-only baseline;
- :mod:`qedge.compress.report` — ``write_report`` (Markdown/JSON/PNG) and ``measure_latency``;
- :mod:`qedge.compress.pipeline` — one prune → fine-tune → measure run;
- :mod:`qedge.compress.run` — ``compress_model``: the whole grid + KD-only baseline behind
  ``qedge compress``, and ``write_compress_report``.

Submodules load on first use (importing ``distill`` does not load Torch-Pruning).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["filter_scores", "register_importance", "prune", "kd_loss", "write_report", "measure_latency",
           "compress_model"]

_HOME = {"filter_scores": "scores", "register_importance": "scores", "prune": "prune", "kd_loss": "distill",
         "write_report": "report", "measure_latency": "report", "compress_model": "run"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"qedge.compress.{_HOME[name]}"), name)
    raise AttributeError(f"module 'qedge.compress' has no attribute {name!r}")
