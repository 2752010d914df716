"""The whole ``qedge compress`` job as one library call (design.md §6).

:func:`compress_model` takes a trained quaternion model and its ``meta``, runs every grid point
(criterion × ratio × with/without KD) as prune → fine-tune → measure
(:func:`qedge.compress.pipeline.run_one`), saves each run's model with its ``compress`` history
record, optionally trains the paper's KD-only baseline at the primary run's MACs
(:func:`kd_baseline`), and returns a :class:`CompressResult`; :func:`write_compress_report` turns
it into report.md/json/png. :func:`train_baseline` trains the dataset's default model when there
is none to compress. Messages go to ``log`` (no typer, no rich); ``qedge compress`` is a thin
command around these functions.

Torch, Torch-Pruning and the training code load inside the functions. Seeding: fine-tuning seeds
itself from ``seed`` (:class:`qedge.fit.TrainConfig`); the KD student's initial weights come from
the global Torch RNG, which ``qedge compress`` seeds with ``torch.manual_seed(seed)`` before it
loads the model — do the same for a reproducible student.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from qedge.errors import QedgeError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from qedge.compress.pipeline import Datasets

__all__ = ["CompressResult", "compress_model", "check_options", "default_finetune_epochs", "finetune_config",
           "train_baseline", "kd_baseline", "retune_listen", "write_compress_report"]

Log = Callable[[str], None]


@dataclass
class CompressResult:
    """What :func:`compress_model` did.

    rows: report rows (``unpruned`` first, then each grid run, then the KD-only student when
    trained), as :func:`qedge.compress.report.write_report` takes them; each run's row has its
    saved ``model`` path. paths: run name -> model file written. metric: ``accuracy`` or ``map``.
    base_metric: the unpruned model's metric on the held-out clips. primary: the run saved at
    ``out``. arch, data, layers: the teacher's architecture, the dataset and the layer selection
    in words (for titles).
    """

    rows: list[dict[str, Any]]
    paths: dict[str, Path]
    metric: str
    base_metric: float
    primary: str
    arch: str | None
    data: str
    layers: str


def default_finetune_epochs(data: str, format: str | None = None) -> int:
    """The dataset recipe's fine-tuning epochs (e.g. 40 for esc10, 10 for fsdd; 10 without one)."""
    from qedge.recipes import recipe_for

    return int(recipe_for(data, format)[1].get("finetune_epochs", 10))


def finetune_config(data: str, fmt: str | None, lr: float | None, batch_size: int | None, seed: int) -> dict:
    """Fine-tuning overrides of :class:`qedge.fit.TrainConfig`: the dataset recipe's batch size and
    augmentation, half its learning rate, a short warm-up."""
    from qedge.recipes import recipe_for

    _, recipe = recipe_for(data, fmt)
    out = {"batch_size": batch_size or int(recipe.get("batch_size", 32)),
           "lr": lr if lr is not None else float(recipe.get("lr", 1e-3)) / 2,
           "specaugment": bool(recipe.get("specaugment", True)), "mixup": float(recipe.get("mixup", 0.0)),
           "weight_decay": float(recipe.get("weight_decay", 1e-2)), "warmup_epochs": 0.5, "seed": seed}
    if out["lr"] <= 0 or out["batch_size"] <= 0:
        raise QedgeError("--lr and --batch-size must be positive")
    return out


def check_options(
    criteria: Sequence[str],
    ratios: Sequence[float],
    *,
    data: str,
    format: str | None = None,
    out: Path,
    round_to: int | None = None,
    finetune_epochs: int | None = None,
    kd_baseline_epochs: int = 0,
    lr: float | None = None,
    batch_size: int | None = None,
    clip_sv: float | None = None,
    clip_every: int = 50,
    seed: int = 0,
) -> None:
    """Refuse settings :func:`compress_model` cannot run, in one line (:class:`QedgeError`), before
    any model is loaded or trained. ``finetune_epochs=None`` means the recipe's."""
    from qedge.compress.scores import importance

    if not criteria or not ratios:
        raise QedgeError("nothing to compress: no criterion or no ratio given")
    for c in criteria:
        importance(c)
    for r in ratios:
        if not 0.0 <= r < 1.0:
            raise QedgeError(f"pruning ratio must be in [0, 1), got {r}")
    if round_to is not None and (round_to <= 0 or round_to % 4):
        raise QedgeError(f"--round-to must be a positive multiple of 4, got {round_to}")
    if (finetune_epochs is not None and finetune_epochs < 0) or kd_baseline_epochs < 0:
        raise QedgeError("epoch counts must be ≥ 0")
    if Path(out).suffix != ".qedge":
        raise QedgeError(f"--out {out}: expected a .qedge file name")
    finetune_config(data, format, lr, batch_size, seed)
    if clip_sv is not None and (clip_sv <= 0 or clip_every <= 0):
        raise QedgeError("--clip-sv and --clip-every must be positive")


def train_baseline(data: str, format: str | None, out: Path, log: Log = print) -> tuple["nn.Module", dict]:
    """Train the dataset's default baseline with :func:`qedge.train.train_model` and save it beside
    ``out`` as ``<out stem>-baseline.qedge``; returns ``(model, meta)``."""
    from qedge import train

    out = Path(out)
    base_path = out.with_name(f"{out.stem}-baseline.qedge")
    log(f"no MODEL given: training the {data} baseline first (qedge train defaults) → {base_path}")
    return train.train_model(data, format=format, out=base_path, log=log)


def retune_listen(model: "nn.Module", meta: dict, data: str, log: Log = print) -> None:
    """An open-set model's compressed or distilled copy scores differently from its teacher: choose
    its own thresholds and smoothing (:func:`qedge.stream.tune.choose_listen_settings`) into
    ``meta["listen"]`` and record how in its last history entry."""
    from qedge.meta import ModelRecord

    if not ModelRecord.from_meta(meta).open_set:
        return
    from qedge.stream.tune import choose_listen_settings

    meta["listen"], meta["history"][-1]["listen_tuning"] = choose_listen_settings(model, meta, data, log=log)


def kd_baseline(
    teacher: "nn.Module",
    meta: Mapping[str, Any],
    datasets: "Datasets",
    *,
    target_macs: int,
    epochs: int,
    overrides: Mapping[str, Any],
    out: Path,
    data: str,
    temperature: float = 2.0,
    device: str = "auto",
    report_dir: Path | None = None,
    latency_repeats: int = 20,
    log: Log = print,
) -> dict[str, Any]:
    """The paper's KD-only baseline: a student of the teacher's family at ≈ ``target_macs``
    (:func:`qedge.compress.distill.train_kd_student`), trained from scratch for ``epochs`` with
    KD (twice the fine-tuning lr of ``overrides``, one warm-up epoch), saved as
    ``<out stem>-kd-student-w<width>.qedge`` in ``report_dir`` (else beside ``out``).

    The student's history is the teacher's (so its training record, and with it the held-out
    split, carries over) plus one ``kd-baseline`` record. Returns its report row.
    """
    from qedge import checkpoint
    from qedge.compress.distill import train_kd_student
    from qedge.compress.pipeline import evaluate_metric, metric_name
    from qedge.fit import TrainConfig
    from qedge.meta import ModelRecord
    from qedge.profile import profile

    teacher_record = ModelRecord.from_meta(meta)
    out = Path(out)
    config = TrainConfig.from_dict({**overrides, "epochs": epochs, "device": device,
                                    "lr": overrides["lr"] * 2, "warmup_epochs": 1.0})
    start = time.perf_counter()
    student, history, width = train_kd_student(teacher, datasets.train, datasets.val, config,
                                               task=datasets.task, target_macs=target_macs,
                                               input_shape=datasets.input_shape, temperature=temperature)
    seconds = time.perf_counter() - start
    student.to("cpu").eval()
    prof = profile(student, datasets.input_shape)
    metric = evaluate_metric(student, datasets.test, datasets.task, "cpu")
    name = f"kd-student-w{width:g}"
    row: dict[str, Any] = {"name": name, "student": True, "kd": True, "params": prof.params, "macs": prof.macs,
                           "metric": metric, "finetune_seconds": round(seconds, 2), "finetune_epochs": epochs}
    if report_dir is not None:
        from qedge.compress.report import measure_latency

        row["latency_ms"], row["latency_backend"] = measure_latency(student, meta, datasets.input_shape[2],
                                                                    repeats=latency_repeats)
    folder = Path(report_dir) if report_dir is not None else out.parent
    new_meta = dict(meta)
    new_meta["arch_kwargs"] = dict(student.arch_kwargs)
    record = {"step": "kd-baseline", "teacher_arch": teacher_record.arch, "width": width,
              "target_macs": target_macs, "macs": prof.macs, "params": prof.params,
              "temperature": temperature, metric_name(datasets.task): metric,
              "seconds": round(seconds, 2), "epochs_run": epochs, "epochs": history}
    new_meta["history"] = [*teacher_record.history, record]
    retune_listen(student, new_meta, data, log)
    path = checkpoint.save(folder / f"{out.stem}-{name}.qedge", student, new_meta)
    row["model"] = str(path)
    log(f"{name}: KD-only student ({prof.macs / 1e9:.4f} GMACs) {metric:.4f} after {epochs} epochs "
        f"({seconds:.0f} s); saved {path}")
    return row


def compress_model(
    teacher: "nn.Module",
    meta: Mapping[str, Any],
    data: str,
    format: str | None = None,
    *,
    out: Path,
    criteria: Sequence[str] = ("opnorm",),
    ratios: Sequence[float] = (0.5,),
    layers: str | Sequence[str] = "later",
    kd_modes: Sequence[bool] = (False,),
    kd_temperature: float = 2.0,
    finetune_epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    clip_sv: float | None = None,
    clip_every: int = 50,
    round_to: int | None = None,
    kd_baseline_epochs: int = 0,
    report_dir: Path | None = None,
    latency_repeats: int = 20,
    device: str = "auto",
    seed: int = 0,
    method: str | None = None,
    ratio: float | None = None,
    kd: bool | None = None,
    source: str = "model",
    log: Log = print,
) -> CompressResult:
    """Prune ``teacher`` at every (criterion, ratio, KD) of the grid, fine-tune, measure, save.

    ``data``/``format``: the dataset (``esc10``, ``fsdd`` or a path), split as the model was
    trained (:meth:`qedge.meta.ModelRecord.test_split`). ``criteria``: registered criteria
    (:data:`qedge.compress.scores.METHODS`); ``ratios`` in [0, 1) (0 fine-tunes the unpruned
    model); ``layers``: ``'later'``, ``'all'`` or quaternion layer names (a list or one
    comma-separated string); ``kd_modes``: fine-tune without (False) and/or with (True) KD from
    ``teacher`` at ``kd_temperature``. ``finetune_epochs`` (None: the recipe's), ``lr`` (None:
    half the recipe's), ``batch_size``, ``clip_sv``/``clip_every`` (spectral clipping while
    fine-tuning), ``round_to`` (real widths multiples of N), ``device`` and ``seed`` set
    fine-tuning. ``kd_baseline_epochs`` > 0 adds the KD-only student. ``report_dir``: measure
    latency (``latency_repeats`` runs) and put the non-primary models there.

    The run matching (``method``, ``ratio``, ``kd``) — by default the grid's first — is saved at
    ``out``; the others as ``<out stem>-<run>.qedge`` in ``report_dir`` (else beside ``out``).
    Each saved model's history is the teacher's plus its ``compress`` record. ``source`` names
    the teacher in error messages. Bad settings raise :class:`QedgeError` before any work.
    """
    from qedge import checkpoint
    from qedge.compress.pipeline import (
        CompressSettings,
        default_outputs,
        evaluate_metric,
        load_datasets,
        metric_name,
        run_one,
    )
    from qedge.compress.prune import prunable_layers, resolve_layers
    from qedge.meta import ModelRecord
    from qedge.profile import profile

    out = Path(out)
    report_dir = Path(report_dir) if report_dir is not None else None
    criteria, ratios, kd_modes = list(criteria), [float(r) for r in ratios], [bool(k) for k in kd_modes]
    check_options(criteria, ratios, data=data, format=format, out=out, round_to=round_to,
                  finetune_epochs=finetune_epochs, kd_baseline_epochs=kd_baseline_epochs, lr=lr,
                  batch_size=batch_size, clip_sv=clip_sv, clip_every=clip_every, seed=seed)
    if not kd_modes:
        raise QedgeError("nothing to compress: no KD mode given")
    if finetune_epochs is None:
        finetune_epochs = default_finetune_epochs(data, format)
    record = ModelRecord.from_meta(meta, source=source)
    if not prunable_layers(teacher):
        raise QedgeError(f"{source}: {record.arch} has no convolution that can be pruned")
    if isinstance(layers, str):
        layer_spec: str | list[str] = layers if layers in ("later", "all") else \
            [v.strip() for v in layers.split(",") if v.strip()]
        layers_text = layers
    else:
        layer_spec = list(layers)
        layers_text = ",".join(layer_spec)
    resolve_layers(teacher, layer_spec)  # fail early on bad names
    datasets = load_datasets(data, format, meta)
    metric = metric_name(datasets.task)
    base_metric = evaluate_metric(teacher, datasets.test, datasets.task, "cpu")
    log(f"unpruned {record.arch}: {metric} {base_metric:.4f} on {len(datasets.test)} held-out clips")

    train_overrides = finetune_config(data, format, lr, batch_size, seed)
    if clip_sv is not None:
        train_overrides.update(clip_sv=float(clip_sv), clip_every=int(clip_every))
    grid = [CompressSettings(method=c, ratio=r, layers=layer_spec, round_to=round_to, kd=k,
                             kd_temperature=kd_temperature, finetune_epochs=finetune_epochs,
                             train=train_overrides, latency=report_dir is not None,
                             latency_repeats=latency_repeats)
            for c in criteria for r in ratios for k in kd_modes]
    method = criteria[0] if method is None else method
    ratio = ratios[0] if ratio is None else ratio
    kd = kd_modes[0] if kd is None else kd
    primary = next((s.name for s in grid if s.method == method and s.ratio == ratio and s.kd == kd),
                   grid[0].name)
    targets = default_outputs(out, [s.name for s in grid], primary, report_dir)

    base_prof = profile(teacher, datasets.input_shape)
    rows: list[dict[str, Any]] = [{"name": "unpruned", "params": base_prof.params, "macs": base_prof.macs,
                                   "metric": base_metric}]
    if report_dir is not None:
        from qedge.compress.report import measure_latency

        rows[0]["latency_ms"], rows[0]["latency_backend"] = measure_latency(
            teacher, meta, datasets.input_shape[2], repeats=latency_repeats)
    paths: dict[str, Path] = {}
    for settings in grid:
        pruned, row, entry = run_one(teacher, meta, datasets, settings, baseline_metric=base_metric,
                                     device=device, log=log)
        new_meta = dict(meta)
        new_meta["history"] = [*record.history, entry]
        retune_listen(pruned, new_meta, data, log)
        path = checkpoint.save(targets[settings.name], pruned, new_meta)
        paths[settings.name] = Path(path)
        row["model"] = str(path)
        rows.append(row)
        log(f"{settings.name}: {metric} {row['metric_before']:.4f} after pruning → "
            f"{row['metric']:.4f} after {settings.finetune_epochs} fine-tune epochs "
            f"({row['finetune_seconds']:.0f} s); saved {path}")

    if kd_baseline_epochs > 0:
        target = next(r for r in rows if r["name"] == primary)["macs"]
        student = kd_baseline(teacher, meta, datasets, target_macs=target, epochs=kd_baseline_epochs,
                              overrides=train_overrides, out=out, data=data, temperature=kd_temperature,
                              device=device, report_dir=report_dir, latency_repeats=latency_repeats, log=log)
        paths[student["name"]] = Path(student["model"])
        rows.append(student)
    return CompressResult(rows=rows, paths=paths, metric=metric, base_metric=base_metric, primary=primary,
                          arch=record.arch, data=str(data), layers=layers_text)


def write_compress_report(result: CompressResult, report_dir: Path) -> dict[str, Path]:
    """report.md / report.json / report.png of ``result`` in ``report_dir``
    (:func:`qedge.compress.report.write_report`); returns their paths by kind."""
    from qedge.compress.report import write_report

    return write_report(result.rows, Path(report_dir), metric=result.metric,
                        title=f"qedge compress: {result.arch} on {result.data} ({result.layers} layers)")
