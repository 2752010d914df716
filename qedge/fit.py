"""The fit loop (:func:`fit`): used by ``qedge train`` (:func:`qedge.train.train_model`) and by
``qedge compress`` for fine-tuning.

Loop (design.md §5, §6): AdamW (or Adam), learning rate with linear warm-up then cosine decay,
per step ``lr(s) = lr·s/W`` for ``s < W`` and ``lr·(r + (1−r)·½(1 + cos(π(s−W)/(S−W))))`` after,
with ``r = config.min_lr_ratio``; loss = cross-entropy (single-label) or BCE-with-logits
(multi-label); with a teacher, + the distillation term of design.md §6,
T²·KL(softmax(t/T) ‖ softmax(s/T)) (sigmoid form for multi-label), from
:func:`qedge.losses.kd_loss`. Optional SpecAugment/mixup (from :mod:`qedge.data`),
optional spectral-norm clipping of every convolution every K steps (design.md §7,
:func:`qedge.spectral.clip_model_`), AMP (bf16/fp16) on CUDA only, evaluation each epoch, the
best weights kept (accuracy or mAP).

Determinism: every random stream (torch, numpy, python, CUDA) is re-derived at the start of each
epoch from (seed, rank, epoch), and the sampler order from (seed, epoch), so a run resumed
(``resume_state``, from :func:`qedge.resume.load_resume`) after epoch e draws exactly what an
uninterrupted run draws: on CPU the weights are bit-identical.

Multi-process (DDP) helpers and the progress bar live in :mod:`qedge.fit_support`.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from qedge.errors import QedgeError
from qedge.fit_support import _mean_over_ranks, _num_classes, _Progress, _sync_buffers
from qedge.inference import collate, predict
from qedge.losses import kd_loss, task_loss
from qedge.resume import _restore_rng

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = [
    "TrainConfig",
    "FitState",
    "fit",
    "lr_factor",
]

@dataclass
class TrainConfig:
    """Settings of :func:`fit`.

    optimizer: ``adamw`` | ``adam``.  warmup_epochs: linear warm-up length.  min_lr_ratio: final
    lr / lr of the cosine.  mixup: Beta(α, α) parameter (0 = off).  specaugment: time/frequency
    masking on all four quaternion components.  amp: ``auto`` (bf16 if supported, else fp16, CUDA
    only) | ``bf16`` | ``fp16`` | ``off``.  clip_sv / clip_every: clip every conv's singular values
    to ``clip_sv`` every ``clip_every`` optimizer steps (None = off).  grad_clip: max global grad
    norm (None = off).  workers: DataLoader workers.
    """

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    optimizer: str = "adamw"
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    mixup: float = 0.0
    specaugment: bool = True
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    device: str = "auto"
    amp: str = "auto"
    workers: int = 0
    seed: int = 0
    clip_sv: float | None = None
    clip_every: int = 50
    eval_batch_size: int = 64

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class FitState:
    """What :func:`fit` hands to ``on_epoch_end`` after each epoch (and what a resume restores)."""

    epoch: int                      # completed epochs
    step: int                       # optimizer steps taken
    model: "nn.Module"              # the bare model (not the DDP wrapper)
    optimizer: "torch.optim.Optimizer"
    history: list[dict[str, Any]]
    best_metric: float | None
    best_epoch: int | None
    best_state: dict[str, "torch.Tensor"] | None
    config: TrainConfig
    rank: int = 0
    world_size: int = 1
    scaler: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


# ----------------------------------------------------------------------------------------------
# Schedule, seeding
# ----------------------------------------------------------------------------------------------
def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Multiplier of the base lr at ``step`` (0-based): linear warm-up, then cosine to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _seed_everything(seed: int) -> None:
    import torch

    seed = int(seed) % (2**63 - 1)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)  # also seeds every CUDA device


def _epoch_seed(seed: int, rank: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + rank * 10_007 + epoch * 101 + 17) % (2**62)


def _worker_init(worker_id: int) -> None:  # pragma: no cover - runs in DataLoader workers
    import torch

    np.random.seed(torch.initial_seed() % (2**32))
    random.seed(torch.initial_seed())


# ----------------------------------------------------------------------------------------------
# Batches and losses
# ----------------------------------------------------------------------------------------------
def _augmenter(config: TrainConfig, task: str, num_classes: int) -> Callable | None:
    """Batch augmentation (SpecAugment, mixup) from :mod:`qedge.data`; None when nothing is on."""
    if not config.specaugment and config.mixup <= 0:
        return None
    from qedge.data import augment as aug

    return aug.batch_augmenter(specaugment=config.specaugment, mixup=config.mixup,
                               num_classes=num_classes, multilabel=(task == "multi-label"))


# ----------------------------------------------------------------------------------------------
# Evaluation inside the loop
# ----------------------------------------------------------------------------------------------
def _metrics(logits: np.ndarray, targets: np.ndarray, task: str) -> dict[str, float]:
    import torch

    from qedge.evaluate import accuracy, mean_average_precision

    lt, tt = torch.from_numpy(logits), torch.from_numpy(targets)
    loss = float(task_loss(lt, tt if task == "multi-label" else tt.long(), task, 0.0))
    if task == "multi-label":
        scores = 1.0 / (1.0 + np.exp(-logits))
        return {"eval_loss": loss, "map": mean_average_precision(scores, targets)[0]}
    return {"eval_loss": loss, "accuracy": accuracy(logits, targets)}


def _metric_name(task: str) -> str:
    return "map" if task == "multi-label" else "accuracy"


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------
def _amp_dtype(config: TrainConfig, device: str) -> Any:
    import torch

    mode = (config.amp or "off").lower()
    if not device.startswith("cuda") or mode == "off":
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode in ("bf16", "fp16"):
        return torch.bfloat16 if mode == "bf16" else torch.float16
    raise QedgeError(f"amp must be auto, bf16, fp16 or off, got {config.amp!r}")


def _make_optimizer(model: "nn.Module", config: TrainConfig) -> "torch.optim.Optimizer":
    import torch

    name = config.optimizer.lower()
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    raise QedgeError(f"optimizer must be adamw or adam, got {config.optimizer!r}")


def _spectral_clipper(model: "nn.Module", config: TrainConfig, input_shape: tuple[int, ...]) -> Callable[[], None] | None:
    """A closure clipping every conv's singular values to ``config.clip_sv`` (design.md §7)."""
    if config.clip_sv is None:
        return None
    if config.clip_sv <= 0 or config.clip_every <= 0:
        raise QedgeError("--clip-sv must be > 0 and --clip-every ≥ 1")
    from qedge.spectral import clip_model_, input_sizes

    sizes = input_sizes(model, input_shape)

    def clip() -> None:
        import torch

        with torch.no_grad():
            clip_model_(model, config.clip_sv, sizes)

    return clip


def fit(
    model: "nn.Module",
    train_set: Any,
    eval_set: Any,
    config: TrainConfig,
    *,
    task: str = "single-label",
    teacher: "nn.Module | None" = None,
    kd_temperature: float = 2.0,
    on_epoch_end: Callable[[FitState], Any] | None = None,
    resume_state: dict[str, Any] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train ``model`` in place on ``train_set`` (items ``(features (4,T,M), target)``), evaluate on
    ``eval_set`` after each epoch, keep and finally load the best weights; return the history.

    Each history record: ``epoch, lr, train_loss, eval_loss, accuracy|map, seconds``. The
    selection metric is accuracy (single-label) or mAP (multi-label); without ``eval_set`` the
    last epoch is kept. ``resume_state`` (from :func:`qedge.resume.load_resume`) continues after its epoch.
    Under ``torchrun`` the model is wrapped in DistributedDataParallel (see :mod:`qedge.distributed`).
    """
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    from qedge.distributed import context

    if task not in ("single-label", "multi-label"):
        raise QedgeError(f"task must be 'single-label' or 'multi-label', got {task!r}")
    if len(train_set) == 0:
        raise QedgeError("the training set is empty")
    ctx = context(config.device)
    device = ctx.device
    amp_dtype = _amp_dtype(config, device)
    model.to(device)
    if teacher is not None:
        teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    optimizer = _make_optimizer(model, config)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=config.seed, drop_last=False)
    per_rank = len(sampler)
    drop_last = per_rank > config.batch_size  # BatchNorm needs > 1 item per batch
    loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler, drop_last=drop_last,
                        num_workers=config.workers, collate_fn=collate, worker_init_fn=_worker_init,
                        pin_memory=device.startswith("cuda"), persistent_workers=False)
    steps_per_epoch = max(1, len(loader))
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
    num_classes = _num_classes(model)
    augment = _augmenter(config, task, num_classes)

    net: nn.Module = model
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None)

    start_epoch, step = 0, 0
    history: list[dict[str, Any]] = []
    best_metric: float | None = None
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    if resume_state is not None:
        start_epoch, step = int(resume_state["epoch"]), int(resume_state["step"])
        history = list(resume_state["history"])
        best_metric, best_epoch = resume_state.get("best_metric"), resume_state.get("best_epoch")
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        if scaler is not None and resume_state.get("scaler"):
            scaler.load_state_dict(resume_state["scaler"])
        best_state = resume_state.get("best")
        _restore_rng(resume_state.get("rng"))

    clipper = None
    if config.clip_sv is not None:
        # the bound is enforced at the evaluation (deployment) window size when there is one
        x0, _ = collate([(eval_set if eval_set is not None and len(eval_set) else train_set)[0]])
        clipper = _spectral_clipper(model, config, (1, *x0.shape[1:]))

    metric_name = _metric_name(task)
    show = progress and ctx.is_main
    bar = _Progress(show, total=steps_per_epoch * (config.epochs - start_epoch))
    try:
        for epoch in range(start_epoch, config.epochs):
            t0 = time.perf_counter()
            _seed_everything(_epoch_seed(config.seed, ctx.rank, epoch))
            sampler.set_epoch(epoch)
            net.train()
            loss_sum, seen = 0.0, 0
            for x, y in loader:
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                if augment is not None:
                    x, y = augment(x, y)
                lr = config.lr * lr_factor(step, total_steps, warmup_steps, config.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with torch.autocast(device_type="cuda", dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = net(x)
                    loss = task_loss(logits, y, task, config.label_smoothing)
                    if teacher is not None:
                        with torch.no_grad():
                            t_logits = teacher(x)
                        loss = loss + kd_loss(logits.float(), t_logits.float(), kd_temperature, task)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                step += 1
                if clipper is not None and step % config.clip_every == 0:
                    clipper()
                loss_sum += float(loss.detach()) * x.shape[0]
                seen += x.shape[0]
                bar.advance(f"epoch {epoch + 1}/{config.epochs} loss {loss_sum / max(seen, 1):.3f}")
            if clipper is not None and step % config.clip_every != 0:
                clipper()  # every saved epoch ends inside the bound
            _sync_buffers(ctx, model)
            record: dict[str, Any] = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                                      "train_loss": _mean_over_ranks(ctx, loss_sum, seen)}
            if eval_set is not None and len(eval_set):
                lg, tg = predict(model, eval_set, batch_size=config.eval_batch_size, device=device,
                                 workers=config.workers, ctx=ctx, amp_dtype=amp_dtype)
                record.update(_metrics(lg, tg, task))
            record["seconds"] = round(time.perf_counter() - t0, 3)
            history.append(record)
            current = record.get(metric_name, None)
            if current is None or best_metric is None or current > best_metric:
                best_metric = current if current is not None else None
                best_epoch = epoch + 1
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            bar.note(f"epoch {epoch + 1}/{config.epochs} loss {record['train_loss']:.3f}"
                     + (f" {metric_name} {current:.3f}" if current is not None else ""))
            if on_epoch_end is not None:
                on_epoch_end(FitState(epoch=epoch + 1, step=step, model=model, optimizer=optimizer,
                                      history=history, best_metric=best_metric, best_epoch=best_epoch,
                                      best_state=best_state, config=config, rank=ctx.rank,
                                      world_size=ctx.world_size, scaler=scaler))
    finally:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return history
