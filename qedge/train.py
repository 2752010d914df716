"""Training: the fit loop (:func:`fit`, also used by ``qedge compress`` for fine-tuning) and the
whole pipeline behind ``qedge train`` (:func:`train_model`).

Loop (design.md §5, §6): AdamW (or Adam), learning rate with linear warm-up then cosine decay,
per step ``lr(s) = lr·s/W`` for ``s < W`` and ``lr·(r + (1−r)·½(1 + cos(π(s−W)/(S−W))))`` after,
with ``r = config.min_lr_ratio``; loss = cross-entropy (single-label) or BCE-with-logits
(multi-label); with a teacher, + the distillation term of design.md §6,
T²·KL(softmax(t/T) ‖ softmax(s/T)) (sigmoid form for multi-label), from
:func:`qedge.losses.kd_loss`. Optional SpecAugment/mixup (from :mod:`qedge.data`),
optional spectral-norm clipping of every convolution every K steps (design.md §7,
:func:`qedge.spectral.clip_model_`), AMP (bf16/fp16) on CUDA only, evaluation each epoch, the
best weights kept (accuracy or mAP).

Determinism and ``--resume``: every random stream (torch, numpy, python, CUDA) is re-derived at
the start of each epoch from (seed, rank, epoch), and the sampler order from (seed, epoch), so a
run resumed from the state saved after epoch e draws exactly what an uninterrupted run draws: on
CPU the weights are bit-identical. The resume file (safetensors + JSON) also records the RNG
states, optimizer moments, step, history and best weights.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from qedge.errors import QedgeError
from qedge.inference import collate, predict
from qedge.losses import kd_loss, task_loss
from qedge.recipes import RECIPES, recipe_for, wave_augmentations

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = [
    "TrainConfig",
    "FitState",
    "fit",
    "train_model",
    "save_resume",
    "load_resume",
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
    last epoch is kept. ``resume_state`` (from :func:`load_resume`) continues after its epoch.
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


# ----------------------------------------------------------------------------------------------
# Resume files: safetensors + JSON, never pickle
# ----------------------------------------------------------------------------------------------
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
    """Read a resume file into the ``resume_state`` dict :func:`fit` accepts."""
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


# ----------------------------------------------------------------------------------------------
# The pipeline behind `qedge train`
# ----------------------------------------------------------------------------------------------
def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def train_model(
    data: str | Path,
    *,
    format: str | None = None,
    arch: str | None = None,
    width: float | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    clip_seconds: float | None = None,
    train_seconds: float | None = None,
    features: dict[str, Any] | None = None,
    mixup: float | None = None,
    specaugment: bool | None = None,
    mean_norm: bool | None = None,
    trim: float | None = None,
    endpoint: float | None = None,
    gain_db: tuple[float, float] | None = None,
    noise_snr_db: tuple[float, float] | None = None,
    open_set: bool | None = None,
    background: Sequence[str | Path] = (),
    out: str | Path = "model.qedge",
    seed: int = 0,
    device: str = "auto",
    amp: str = "auto",
    workers: int = 0,
    clip_sv: float | None = None,
    clip_every: int = 50,
    test_fold: str | None = None,
    test_speaker: str | None = None,
    cache_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple["nn.Module", dict[str, Any]]:
    """Index ``data``, split it, train, save the best model to ``out`` and return ``(model, meta)``.

    Unset options come from :data:`qedge.recipes.RECIPES` (per bundled dataset, else by format). Features:
    :class:`~qedge.runtime.features.FeatureConfig` with the recipe's overrides, then ``features``.
    Training items are random crops of ``train_seconds`` (default ``clip_seconds``), evaluation
    items the centred ``clip_seconds`` crop (``None``: the longest clip). After every epoch rank 0
    writes ``out`` (best weights so far + history) and ``<out>.resume`` atomically; ``resume=True``
    continues from the latter (same result as an uninterrupted run). The resume file is removed
    once training completes. ``meta['history'][-1]`` records settings, per-epoch figures, final
    accuracy/mAP, params and MACs (:func:`qedge.profile.profile` on one ``clip_seconds`` window).

    Open set (``open_set``, recipe default; implied by ``background`` folders): a single-label
    model gets one more output, :data:`~qedge.data.background.BACKGROUND_LABEL`, trained on
    event-free audio (:mod:`qedge.data.background`), so it can say that none of its classes sounds.
    """
    import torch

    from qedge import checkpoint
    from qedge.data import ClipDataset, find_dataset
    from qedge.data.background import (BACKGROUND_LABEL, MixBackground, open_set_labels, open_set_settings,
                                       training_bank, with_negatives)
    from qedge.distributed import context
    from qedge.models import build, check_arch
    from qedge.profile import profile
    from qedge.runtime.features import FeatureConfig

    say = log or (lambda _msg: None)
    started = time.perf_counter()
    out = Path(out)
    index = find_dataset(data, format)
    recipe_name, recipe = recipe_for(data, format, index.format)
    train_idx, test_idx = index.split(test_fold=test_fold, test_speaker=test_speaker)
    feat_cfg = FeatureConfig.from_dict({**FeatureConfig().to_dict(), **recipe.get("features", {}), **(features or {})})
    clip_seconds = _pick(clip_seconds, recipe.get("clip_seconds"))
    train_seconds = _pick(train_seconds, _pick(recipe.get("train_seconds"), clip_seconds))
    config = TrainConfig(
        epochs=int(_pick(epochs, recipe["epochs"])), batch_size=int(_pick(batch_size, recipe["batch_size"])),
        lr=float(_pick(lr, recipe["lr"])), mixup=float(_pick(mixup, recipe.get("mixup", 0.0))),
        specaugment=bool(_pick(specaugment, recipe.get("specaugment", True))),
        weight_decay=float(recipe.get("weight_decay", 1e-2)), warmup_epochs=float(recipe.get("warmup_epochs", 1.0)),
        label_smoothing=float(recipe.get("label_smoothing", 0.0)),
        device=device, amp=amp, workers=int(workers), seed=int(seed), clip_sv=clip_sv, clip_every=int(clip_every),
    )
    if config.epochs < 1 or config.batch_size < 1 or config.lr <= 0:
        raise QedgeError("--epochs and --batch-size must be ≥ 1 and --lr > 0")
    ctx = context(device)
    if clip_seconds is None:
        from qedge.data import longest_clip_seconds

        clip_seconds = longest_clip_seconds(index.clips)
    clip_seconds = float(clip_seconds)
    wave_settings = {"trim": _pick(trim, recipe.get("trim")), "endpoint": _pick(endpoint, recipe.get("endpoint")),
                     "gain_db": _pick(gain_db, recipe.get("gain_db")),
                     "noise_snr_db": _pick(noise_snr_db, recipe.get("noise_snr_db"))}
    wave_aug = wave_augmentations(wave_settings, sample_rate=feat_cfg.sample_rate)
    arch = str(_pick(arch, recipe["arch"]))
    check_arch(arch)  # before the open set's background bank is read
    open_set = bool(background) or bool(_pick(open_set, recipe.get("open_set", False)))
    labels = open_set_labels(index.labels, index.task) if open_set else list(index.labels)
    bank, open_cfg = None, open_set_settings(recipe)
    if open_set:
        bank = training_bank(feat_cfg.sample_rate, index.format, background, cache_dir)
        wave_aug = [*wave_aug, MixBackground(bank, tuple(open_cfg["mix_snr_db"]), open_cfg["mix_p"])]
    eval_set = ClipDataset(test_idx, feat_cfg, clip_seconds=clip_seconds, train=False, cache_dir=cache_dir,
                           labels=labels)
    train_set: Any = ClipDataset(train_idx, feat_cfg, clip_seconds=_pick(train_seconds, clip_seconds), train=True,
                                 cache_dir=cache_dir, augment=wave_aug or None, labels=labels, event_crops=open_set)
    train_crop = float(train_set.clip_seconds)
    open_settings: dict[str, Any] = {"open_set": open_set}
    if bank is not None:
        clips = len(train_set)
        train_set = with_negatives(train_set, bank, feat_cfg, labels, open_cfg["negatives"])
        size = len(train_set) - clips
        open_settings.update({"background_items": size, **open_cfg, "bank": bank.describe(),
                              "background_dirs": [str(p) for p in background]})
        say(f"open set: {size} background items per epoch ({', '.join(bank.kinds)}); events mixed into "
            f"beds at {open_cfg['mix_snr_db'][0]:g}–{open_cfg['mix_snr_db'][1]:g} dB SNR")
    width = float(_pick(width, recipe["width"]))
    _seed_everything(config.seed)
    mean_norm = bool(_pick(mean_norm, recipe.get("mean_norm", False)))
    model = build(arch, num_classes=len(labels), width=width, n_mels=feat_cfg.n_mels, mean_norm=mean_norm)
    meta: dict[str, Any] = {
        "arch": model.arch, "arch_kwargs": model.arch_kwargs, "labels": labels,
        "features": feat_cfg.to_dict(), "clip_seconds": float(clip_seconds), "task": index.task,
        "history": [],
    }
    if open_set:
        meta["background_label"] = BACKGROUND_LABEL
    settings = {
        "data": str(data), "format": index.format, "recipe": recipe_name, "train_clips": len(train_idx),
        "test_clips": len(test_idx), "test_fold": test_fold, "test_speaker": test_speaker,
        "train_seconds": train_crop, "arch": arch, "width": width, "mean_norm": mean_norm,
        "wave_augment": [type(t).__name__ for t in wave_aug], **wave_settings, **open_settings,
        "train_config": config.to_dict(), "world_size": ctx.world_size, "device": ctx.device,
    }
    rpath = checkpoint.resume_path(out)
    resume_state = None
    if resume:
        if rpath.exists():
            resume_state = load_resume(rpath)
            saved = resume_state.get("extra", {}).get("settings", {})
            for key in ("arch", "width", "mean_norm", "format", "train_clips", "test_clips", "open_set"):
                if key in saved and saved[key] != settings[key]:
                    raise QedgeError(f"{rpath}: saved run has {key}={saved[key]!r}, this one {settings[key]!r}: "
                                     "resume with the same options or start afresh without --resume")
            if int(saved.get("train_config", {}).get("epochs", config.epochs)) != config.epochs:
                raise QedgeError(f"{rpath}: saved run was for {saved['train_config']['epochs']} epochs, "
                                 f"this one for {config.epochs}: the schedule would differ")
            say(f"resuming from {rpath} after epoch {resume_state['epoch']}")
        else:
            say(f"no resume state at {rpath}: starting from scratch")

    def entry(history: list[dict[str, Any]], best_epoch: int | None, final: bool) -> dict[str, Any]:
        rec: dict[str, Any] = {"step": "train", **settings, "epochs_run": len(history), "best_epoch": best_epoch,
                               "completed": final, "epochs": history}
        if best_epoch is not None and history:
            best = history[best_epoch - 1]
            for key in ("accuracy", "map", "eval_loss"):
                if key in best:
                    rec[key] = best[key]
                if key in history[-1]:  # the last epoch's figure too: the best is chosen on the test split
                    rec["last_" + key] = history[-1][key]
        return rec

    def on_epoch_end(state: FitState) -> None:
        if not state.is_main:
            return
        checkpoint.save_state(out, state.best_state or state.model.state_dict(),
                              {**meta, "history": [entry(state.history, state.best_epoch, False)]})
        save_resume(rpath, state, extra={"settings": settings})

    history = fit(model, train_set, eval_set, config, task=index.task, on_epoch_end=on_epoch_end,
                  resume_state=resume_state, progress=progress)
    model.to("cpu").eval()
    prof = profile(model, (1, *eval_set.feature_shape))
    metric = _metric_name(index.task)
    scores = [r.get(metric) for r in history]
    best_epoch = (scores.index(max(scores)) + 1) if history and None not in scores else len(history)
    record = entry(history, best_epoch, True)
    record.update({"params": int(prof.params), "macs": int(prof.macs),
                   "window_frames": int(eval_set.feature_shape[1]),
                   "seconds": round(time.perf_counter() - started, 1)})
    meta["history"] = [record]
    if open_set and ctx.is_main:
        from qedge.stream.tune import choose_listen_settings

        meta["listen"], record["listen_tuning"] = choose_listen_settings(model, meta, str(data), log=say)
        say(f"listen defaults: smoothing {meta['listen']['smooth']}, thresholds "
            + ", ".join(f"{k} {v:g}" for k, v in meta["listen"]["thresholds"].items()))
    if ctx.is_main:
        checkpoint.save(out, model, meta)
        rpath.unlink(missing_ok=True)
    ctx.barrier()
    return model, meta
