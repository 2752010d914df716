"""Resume files (``<out>.resume``, ``qedge train --resume``): safetensors + JSON, never pickle,
written atomically (:func:`qedge.checkpoint.save_tensors`) so an interruption never leaves a torn file.

:func:`save_resume` records, after an epoch of :func:`qedge.fit.fit`: the current and the best
weights, the optimizer's moments, param groups and scalar state, the step, the history, the best
metric/epoch, the config, the grad-scaler state and every RNG state (torch, CUDA, numpy, python).
:func:`load_resume` turns the file back into the ``resume_state`` dict :func:`qedge.fit.fit`
accepts. Resuming is exact because the loop re-derives every random stream from (seed, rank,
epoch) and the sampler order from (seed, epoch) at the start of each epoch, while the weights,
moments and step continue from the file: on CPU the resumed run's weights are bit-identical to an
uninterrupted run's.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from qedge.fit import FitState

__all__ = ["save_resume", "load_resume"]


def _rng_state() -> tuple[dict[str, "torch.Tensor"], dict[str, Any]]:
    import torch

    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, pstate, gauss = random.getstate()
    header = {"numpy": [name, int(pos), int(has_gauss), float(cached)],
              "python": [version, list(pstate), gauss]}
    return tensors, header


def _restore_rng(rng: dict[str, Any] | None) -> None:
    if not rng:
        return
    import torch

    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    cuda = rng.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    if "numpy" in rng:
        name, pos, has_gauss, cached = rng["numpy_header"]
        np.random.set_state((name, rng["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    if "python" in rng:
        version, pstate, gauss = rng["python"]
        random.setstate((version, tuple(pstate), gauss))


def save_resume(path: str | Path, state: FitState, extra: dict[str, Any] | None = None) -> Path:
    """Write the training state after ``state.epoch`` to ``path`` (atomic; safetensors + JSON).

    Tensors: ``model.*`` (current weights), ``best.*`` (best weights), ``optim.<param>.<name>``
    (optimizer moments), ``rng.*``. Header: format, epoch, step, history, best metric/epoch, the
    optimizer's param groups and scalar state, python/numpy RNG, grad-scaler state, ``extra``.
    """
    from qedge.checkpoint import RESUME_FORMAT, save_tensors

    tensors: dict[str, Any] = {}
    for k, v in state.model.state_dict().items():
        tensors["model." + k] = v
    if state.best_state is not None:
        for k, v in state.best_state.items():
            tensors["best." + k] = v
    opt = state.optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in opt["state"].items():
        for name, value in pstate.items():
            if hasattr(value, "shape"):
                tensors[f"optim.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    rng_tensors, rng_header = _rng_state()
    tensors.update(rng_tensors)
    header = {
        "format": RESUME_FORMAT,
        "epoch": state.epoch,
        "step": state.step,
        "history": state.history,
        "best_metric": state.best_metric,
        "best_epoch": state.best_epoch,
        "config": state.config.to_dict(),
        "optim_groups": opt["param_groups"],
        "optim_scalars": scalars,
        "rng": rng_header,
        "scaler": state.scaler.state_dict() if state.scaler is not None else None,
        "extra": extra or {},
    }
    return save_tensors(path, tensors, header)


def load_resume(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Read a resume file into the ``resume_state`` dict :func:`qedge.fit.fit` accepts."""
    from qedge.checkpoint import RESUME_FORMAT, load_tensors

    tensors, header = load_tensors(path, RESUME_FORMAT, map_location)
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = value
    for pid, values in (header.get("optim_scalars") or {}).items():
        opt_state.setdefault(int(pid), {}).update(values)
    rng = {"torch": tensors.get("rng.torch"), "numpy": tensors.get("rng.numpy"),
           "numpy_header": header["rng"]["numpy"], "python": header["rng"]["python"],
           "cuda": [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")),
                                               key=lambda s: int(s.rsplit(".", 1)[1]))]}
    return {
        "epoch": header["epoch"], "step": header["step"], "history": header["history"],
        "best_metric": header.get("best_metric"), "best_epoch": header.get("best_epoch"),
        "config": header.get("config", {}), "model": model, "best": best,
        "optimizer": {"state": opt_state, "param_groups": header["optim_groups"]},
        "scaler": header.get("scaler"), "rng": rng, "extra": header.get("extra", {}),
    }
