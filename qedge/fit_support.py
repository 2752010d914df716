"""Support of the fit loop (:func:`qedge.fit.fit`): the model's class count, the multi-process
(DDP, :mod:`qedge.distributed`) helpers that keep ranks in step (BatchNorm buffers averaged after
each epoch, the train loss averaged over ranks) and the rank-0 progress bar.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qedge.errors import QedgeError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn


def _num_classes(model: "nn.Module") -> int:
    kwargs = getattr(model, "arch_kwargs", None) or {}
    if "num_classes" in kwargs:
        return int(kwargs["num_classes"])
    last = [m for m in model.modules() if hasattr(m, "out_features")]
    if not last:
        raise QedgeError("cannot tell the number of classes of this model")
    return int(last[-1].out_features)


def _sync_buffers(ctx: Any, model: "nn.Module") -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks after an epoch.

    DDP broadcasts rank 0's buffers at each forward, but the last training step updates every
    rank's own copy; averaging makes all ranks evaluate, keep and save the same model."""
    if not ctx.distributed:
        return
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for buf in model.buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf)
                buf.div_(ctx.world_size)
            else:
                dist.broadcast(buf, src=0)


def _mean_over_ranks(ctx: Any, total: float, count: int) -> float:
    if ctx.distributed:
        import torch
        import torch.distributed as dist

        t = torch.tensor([total, float(count)], dtype=torch.float64)
        if ctx.device.startswith("cuda"):
            t = t.to(ctx.device)
        dist.all_reduce(t)
        total, count = float(t[0]), int(t[1])
    return total / max(count, 1)


class _Progress:
    """A rich progress bar (only on rank 0, only when asked); prints one line per epoch."""

    def __init__(self, enabled: bool, total: int) -> None:
        self._p = None
        if enabled and total > 0:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TimeRemainingColumn(), transient=True, console=Console(stderr=True))
            self._p.start()
            self._task = self._p.add_task("training", total=total)

    def advance(self, description: str) -> None:
        if self._p is not None:
            self._p.update(self._task, advance=1, description=description)

    def note(self, line: str) -> None:
        if self._p is not None:
            self._p.console.print(line)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None
