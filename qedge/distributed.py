"""Multi-process training context from the ``torchrun`` environment (RANK, WORLD_SIZE, LOCAL_RANK).

``qedge train`` run under ``torchrun --nproc-per-node N`` becomes data-parallel: the process group
is initialised (NCCL on GPU, Gloo on CPU), each rank drives ``cuda:LOCAL_RANK`` (or the CPU), the
model is wrapped in ``DistributedDataParallel`` and the training set is sharded by a
``DistributedSampler``. Only rank 0 writes files and shows progress.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = ["DistContext", "context", "resolve_device", "all_gather_list"]


@dataclass
class DistContext:
    """Rank, world size and device of this process (world 1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()


def resolve_device(device: str = "auto", local_rank: int = 0) -> str:
    """``auto`` → ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; explicit names pass
    through (``cuda`` gets the local rank appended); asking for CUDA without it is a QedgeError."""
    import torch

    from qedge.errors import QedgeError

    device = (device or "auto").lower()
    if device == "auto":
        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise QedgeError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
        return f"cuda:{local_rank}" if device == "cuda" else device
    if device in ("cpu", "mps"):
        return device
    raise QedgeError(f"--device must be auto, cpu or cuda[:N], got {device!r}")


def context(device: str = "auto") -> DistContext:
    """Read RANK/WORLD_SIZE/LOCAL_RANK and initialise the process group once when WORLD_SIZE > 1."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = resolve_device(device, local)
    if world > 1:
        import torch.distributed as dist

        if dev.startswith("cuda"):
            torch.cuda.set_device(torch.device(dev))
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.startswith("cuda") else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistContext(rank=rank, world_size=world, local_rank=local, device=dev)


def all_gather_list(ctx: DistContext, value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable, produced by this program), in rank order."""
    if not ctx.distributed:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return out
