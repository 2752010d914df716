"""Batched inference over a dataset: :func:`collate` (the batch rule of every DataLoader here) and
:func:`predict` (logits and targets of every item, sharded over ranks and gathered in order).

Used by the fit loop (:mod:`qedge.fit`), :func:`qedge.evaluate.evaluate` and compression, so
that evaluation never depends on the training module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = ["collate", "predict", "TorchBackend"]


def collate(items: list[Any]) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Stack ``(features, target)`` items; targets become int64 (indices) or float32 (multi-hot)."""
    import torch

    xs, ys = zip(*[(it[0], it[1]) for it in items])
    x = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in xs])
    first = torch.as_tensor(ys[0])
    if first.ndim == 0 and not first.is_floating_point():
        y = torch.as_tensor([int(v) for v in ys], dtype=torch.int64)
    else:
        y = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in ys])
    return x, y


def predict(model: "nn.Module", dataset: Any, *, batch_size: int = 64, device: str = "cpu",
            workers: int = 0, ctx: Any = None, amp_dtype: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Logits and targets of every item of ``dataset`` (sharded over ranks, gathered in order)."""
    import torch
    from torch.utils.data import DataLoader, Subset

    from qedge.distributed import all_gather_list

    world = ctx.world_size if ctx is not None else 1
    rank = ctx.rank if ctx is not None else 0
    indices = list(range(rank, len(dataset), world))
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False,
                        num_workers=workers, collate_fn=collate)
    was_training = model.training
    model.eval()
    logits, targets = [], []
    with torch.no_grad():
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            with torch.autocast(device_type="cuda", dtype=amp_dtype, enabled=amp_dtype is not None):
                out = model(x)
            logits.append(out.float().cpu().numpy())
            targets.append(y.numpy())
    model.train(was_training)
    lg = np.concatenate(logits) if logits else np.zeros((0, 0), np.float32)
    tg = np.concatenate(targets) if targets else np.zeros((0,), np.int64)
    if world > 1:
        parts = all_gather_list(ctx, (indices, lg, tg))
        order = np.concatenate([np.asarray(p[0], dtype=np.int64) for p in parts])
        lg = np.concatenate([p[1] for p in parts if len(p[1])])
        tg = np.concatenate([p[2] for p in parts if len(p[2])])
        inv = np.argsort(order, kind="stable")
        lg, tg = lg[inv], tg[inv]
    return lg, tg


class TorchBackend:
    """A PyTorch model as a :class:`qedge.runtime.backends.Backend`: the listen loop (stream
    evaluation, threshold tuning) runs on a ``.qedge`` model without exporting it first.

    Scores are softmax (single-label) or sigmoid (multi-label) of the logits, as the exported
    ONNX computes them (``qedge.export.onnx.scores_module``). ``info``: a
    :class:`~qedge.runtime.model_info.ModelInfo` (MACs left 0: the profile is export's job).
    """

    name = "torch"
    fixed_frames = None

    def __init__(self, model: "nn.Module", meta: dict[str, Any]) -> None:
        from qedge.meta import ModelRecord
        from qedge.runtime.model_info import ModelInfo

        record = ModelRecord.from_meta(meta)
        self.model = model.to("cpu").eval()
        self.multilabel = record.task == "multi-label"
        self.info = ModelInfo(labels=record.labels, features=record.features,
                              arch={"name": record.arch, "kwargs": record.arch_kwargs}, macs=0,
                              params=int(sum(p.numel() for p in model.parameters())),
                              window_frames=record.window_frames(), task=record.task,
                              listen=record.listen_settings())

    def run(self, features: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            logits = self.model(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
            scores = torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=-1)
        return scores.numpy()
