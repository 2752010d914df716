"""The ``qedge compress`` pipeline: prune a trained model, fine-tune it (optionally with KD from the
unpruned model), measure, save, report (design.md §6).

One run = (criterion, ratio): :func:`qedge.compress.prune.prune` (data-free), the task metric right
after pruning, fine-tuning with :func:`qedge.fit.fit` on the same data pipeline as training
(:class:`qedge.data.ClipDataset` with the model's feature configuration, clip length and labels;
the model's own fit / validation / held-out split, :meth:`qedge.meta.ModelRecord.fit_split`: the
epoch is chosen on validation, the held-out clips are only scored), the metric after, params/MACs
(:func:`qedge.profile.profile` at one window), and optionally the deployed latency
(:func:`qedge.compress.report.measure_latency`). A grid runs every (criterion × ratio); the
KD-only baseline (:func:`qedge.compress.distill.train_kd_student`) can be added for comparison.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from qedge.errors import QedgeError
from qedge.evaluate import evaluate_metric

__all__ = ["CompressSettings", "Datasets", "load_datasets", "evaluate_metric", "run_one", "metric_name",
           "default_outputs"]


@dataclass
class CompressSettings:
    """What one compression run does (see ``qedge compress --help``)."""

    method: str = "opnorm"
    ratio: float = 0.5
    layers: str | list[str] = "later"
    round_to: int | None = None
    kd: bool = False
    kd_temperature: float = 2.0
    finetune_epochs: int = 5
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides for fine-tuning
    latency: bool = False
    latency_repeats: int = 20

    @property
    def name(self) -> str:
        parts = [self.method, f"p{self.ratio:g}"]
        if self.round_to:
            parts.append(f"r{self.round_to}")
        if self.kd:
            parts.append("kd")
        return "-".join(parts)


@dataclass
class Datasets:
    """Fit/validation/test datasets built like training does, and the input shape of one window.
    ``val`` is what fine-tuning chooses its epoch on (``None``: the model was trained without a
    validation split, so fine-tuning keeps its last epoch); ``test`` only reports."""

    train: Any
    test: Any
    task: str
    input_shape: tuple[int, int, int, int]
    val: Any = None


def metric_name(task: str) -> str:
    """``accuracy`` (single-label) or ``map`` (multi-label)."""
    return "map" if task == "multi-label" else "accuracy"


def load_datasets(data: str, fmt: str | None, meta: dict[str, Any]) -> Datasets:
    """Index ``data`` (``esc10`` | ``fsdd`` | a path), split it as the model was trained (its
    training record's test fold/speaker, else the format's held-out set) and wrap both halves in
    :class:`ClipDataset` with the model's features, clip length (training crops of the recorded
    ``train_seconds``), its waveform augmentations (trim, endpoint, gain, noise) and labels; an
    open-set model's training half also gets its background mixing and event-free items
    (:func:`qedge.data.background.with_negatives`), as :func:`qedge.train.train_model` built it."""
    from qedge.data import ClipDataset, find_dataset
    from qedge.data.background import MixBackground, open_set_settings, training_bank, with_negatives
    from qedge.meta import ModelRecord
    from qedge.recipes import wave_augmentations

    index = find_dataset(data, fmt)
    record = ModelRecord.from_meta(meta)
    train_idx, val_idx, test_idx = record.fit_split(index)
    labels = list(record.labels)
    # A meta without "task" (one built in code; every model file has one) fine-tunes on the data's
    # own task, where ModelRecord.task would default to single-label.
    task = record.task if "task" in meta else index.task
    train_seconds = record.train_seconds or record.clip_seconds
    trained = record.training
    sample_rate = int(record.features["sample_rate"])
    augment = wave_augmentations(trained, sample_rate=sample_rate)
    bank, open_cfg = None, open_set_settings(trained)
    if trained.get("open_set"):  # fine-tune on the same open set, or the model forgets "nothing"
        bank = training_bank(sample_rate, str(trained.get("format", index.format)),
                             trained.get("background_dirs") or ())
        augment = [*augment, MixBackground(bank, tuple(open_cfg["mix_snr_db"]), open_cfg["mix_p"])]
    train: Any = ClipDataset(train_idx, record.features, train_seconds, train=True, labels=labels,
                             augment=augment or None, event_crops=bank is not None)
    if bank is not None:
        train = with_negatives(train, bank, train.config, labels, open_cfg["negatives"])
    test = ClipDataset(test_idx, record.features, record.clip_seconds, train=False, labels=labels)
    val = ClipDataset(val_idx, record.features, record.clip_seconds, train=False, labels=labels) if len(val_idx) else None
    c, t, m = test.feature_shape
    return Datasets(train=train, test=test, task=task, input_shape=(1, c, t, m), val=val)


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_one(
    teacher: Any,
    meta: dict[str, Any],
    data: Datasets,
    settings: CompressSettings,
    *,
    baseline_metric: float | None,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Prune ``teacher`` with ``settings``, fine-tune, measure.

    Returns ``(pruned model, report row, history entry)``: the row feeds
    :func:`qedge.compress.report.write_report`; the history entry is the ``compress`` record for
    the model file (criterion, ratio, layers, params/MACs before/after, metric before/after,
    fine-tune time and epochs, what was pruned).
    """
    import torch

    from qedge.compress.prune import prune
    from qedge.compress.report import measure_latency
    from qedge.profile import profile
    from qedge.fit import TrainConfig, fit

    dev = _resolve_device(device)
    metric = metric_name(data.task)
    before = profile(teacher, data.input_shape)
    pruned = prune(teacher, settings.method, settings.ratio, settings.layers,
                   example_input=torch.zeros(data.input_shape), round_to=settings.round_to)
    after = profile(pruned, data.input_shape)
    pruned_metric = evaluate_metric(pruned, data.test, data.task, dev)
    log(f"{settings.name}: params {before.params:,} → {after.params:,}, "
        f"MACs {before.macs / 1e9:.4f} G → {after.macs / 1e9:.4f} G, {metric} right after pruning "
        f"{pruned_metric:.4f}")
    history: list[dict[str, Any]] = []
    seconds = 0.0
    if settings.finetune_epochs > 0:
        config = TrainConfig.from_dict({**settings.train, "epochs": settings.finetune_epochs, "device": dev})
        kd_teacher = copy.deepcopy(teacher) if settings.kd else None
        start = time.perf_counter()
        history = fit(pruned, data.train, data.val, config, task=data.task, teacher=kd_teacher,
                      kd_temperature=settings.kd_temperature, progress=progress)
        seconds = time.perf_counter() - start
        pruned.to("cpu")
    final = evaluate_metric(pruned, data.test, data.task, "cpu")
    pruned.eval()
    row: dict[str, Any] = {
        "name": settings.name, "method": settings.method, "ratio": settings.ratio,
        "round_to": settings.round_to, "kd": settings.kd, "params": after.params, "macs": after.macs,
        "metric_before": pruned_metric, "metric": final, "finetune_seconds": round(seconds, 2),
        "finetune_epochs": settings.finetune_epochs,
    }
    if settings.latency:
        row["latency_ms"], row["latency_backend"] = measure_latency(
            pruned, meta, data.input_shape[2], repeats=settings.latency_repeats)
    entry = {
        "step": "compress",
        "method": settings.method, "ratio": settings.ratio,
        "layers": settings.layers, "round_to": settings.round_to, "kd": settings.kd,
        "kd_temperature": settings.kd_temperature if settings.kd else None,
        "params_before": before.params, "params_after": after.params,
        "macs_before": before.macs, "macs_after": after.macs, "input_shape": list(data.input_shape),
        "metric": metric, "before": baseline_metric, "after_pruning": pruned_metric, "after": final,
        metric: final,
        "finetune_epochs": settings.finetune_epochs, "finetune_seconds": round(seconds, 2),
        "finetune_config": settings.train, "epochs": history,
        "pruned": {"groups": pruned.pruning["groups"], "widths_after": pruned.pruning["widths_after"]},
    }
    return pruned, row, entry


def default_outputs(out: Path, names: Sequence[str], primary: str, report_dir: Path | None) -> dict[str, Path]:
    """Where each run's model goes: the primary run at ``out``; the others beside it (or in the
    report folder) as ``<out stem>-<run name>.qedge``."""
    folder = report_dir if report_dir is not None else out.parent
    paths = {}
    for name in names:
        paths[name] = out if name == primary else folder / f"{out.stem}-{name}{out.suffix or '.qedge'}"
    if primary not in paths:
        raise QedgeError(f"internal: primary run {primary} not in the grid")
    return paths
