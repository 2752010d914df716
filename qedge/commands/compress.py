"""``qedge compress``: prune a quaternion model at quaternion granularity, fine-tune (optionally with
KD from the unpruned model), save, and report (design.md §6).

Torch and the compression library are imported inside the function, so ``qedge --help`` stays
light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from qedge.errors import QedgeError


def _floats(text: str | None, what: str) -> list[float]:
    if not text:
        return []
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise QedgeError(f"{what} must be comma-separated numbers, got '{text}'") from exc


def _names(text: str | None) -> list[str]:
    return [v.strip() for v in (text or "").split(",") if v.strip()]


def compress(
    model: Optional[Path] = typer.Argument(
        None, help="Trained .qedge model to compress. Without it, the dataset's baseline is trained "
        "first (qedge train defaults) and saved beside --out as <out>-baseline.qedge."),
    data: str = typer.Option(..., "--data", help="Dataset for fine-tuning/evaluation: esc10, fsdd or a PATH."),
    format: Optional[str] = typer.Option(None, "--format", help="Dataset format when PATH is ambiguous "
                                         "(esc, fsdd, folder, csv, audioset, gtzan)."),
    method: str = typer.Option("opnorm", "--method", help="Filter criterion: opnorm, l1, gm or spectral."),
    ratio: float = typer.Option(0.5, "--ratio", help="Fraction p of quaternion filters removed per pruned layer."),
    layers: str = typer.Option("later", "--layers", help="'later' (the model's later blocks), 'all', or "
                               "comma-separated quaternion layer names."),
    kd: bool = typer.Option(False, "--kd", help="Fine-tune with knowledge distillation from the unpruned model."),
    kd_compare: bool = typer.Option(False, "--kd-compare", help="Run every grid point twice, fine-tuned "
                                    "without and with KD (for the report)."),
    kd_temperature: float = typer.Option(2.0, "--kd-temperature", help="Distillation temperature T."),
    finetune_epochs: Optional[int] = typer.Option(None, "--finetune-epochs", help="Fine-tuning epochs after pruning, "
                                                  "0: none (default: the dataset recipe's, e.g. 40 for esc10, 10 for fsdd)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Fine-tuning learning rate (default: half the "
                                       "dataset recipe's training lr)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Fine-tuning batch size (default: recipe)."),
    clip_sv: Optional[float] = typer.Option(None, "--clip-sv", help="While fine-tuning, clip every quaternion "
                                            "convolution's singular values to C (design.md §7)."),
    clip_every: int = typer.Option(50, "--clip-every", help="Apply --clip-sv every K optimizer steps."),
    round_to: Optional[int] = typer.Option(None, "--round-to", help="Keep every pruned layer's real width a "
                                           "multiple of N (N a multiple of 4)."),
    sweep: Optional[str] = typer.Option(None, "--sweep", help="Comma-separated ratios to run as a grid, "
                                        "e.g. 0.25,0.5,0.75; 0 fine-tunes the unpruned model the same way "
                                        "(the fair reference for an under-trained baseline)."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated criteria for the grid, "
                                          "e.g. opnorm,l1,gm."),
    kd_baseline_epochs: int = typer.Option(0, "--kd-baseline-epochs", help="Also train the paper's KD-only "
                                           "baseline (a narrower model of the same family with ≈ the pruned "
                                           "MACs, from scratch with KD) for N epochs (0: skip)."),
    report_dir: Optional[Path] = typer.Option(None, "--report-dir", help="Write report.md/json/png (with "
                                              "measured latency) and the grid's extra models here."),
    latency_repeats: int = typer.Option(20, "--latency-repeats", help="Timed runs per latency figure (≥ 20)."),
    device: str = typer.Option("auto", "--device", help="Fine-tuning device: auto, cpu, cuda, cuda:N."),
    seed: int = typer.Option(0, "--seed", help="Random seed of fine-tuning."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the pruned (fine-tuned) model (.qedge); "
                             "with a grid, the --method/--ratio run (else the first) goes here and the "
                             "others to <out>-<run>.qedge in --report-dir (or beside --out)."),
) -> None:
    """Prune a quaternion model (whole quaternion filters), fine-tune it, save it, print a summary."""
    from rich.console import Console
    from rich.table import Table

    from qedge.compress.scores import METHODS

    console = Console(stderr=True)
    ratios = _floats(sweep, "--sweep") or [ratio]
    criteria = _names(methods) or [method]
    for c in criteria:
        if c not in METHODS:
            raise QedgeError(f"unknown pruning criterion '{c}' (choose from {', '.join(METHODS)})")
    for r in ratios:
        if not 0.0 <= r < 1.0:
            raise QedgeError(f"pruning ratio must be in [0, 1), got {r}")
    if round_to is not None and (round_to <= 0 or round_to % 4):
        raise QedgeError(f"--round-to must be a positive multiple of 4, got {round_to}")
    if finetune_epochs is None:
        from qedge.recipes import recipe_for

        finetune_epochs = int(recipe_for(data, format)[1].get("finetune_epochs", 10))
    if finetune_epochs < 0 or kd_baseline_epochs < 0:
        raise QedgeError("epoch counts must be ≥ 0")
    if out.suffix != ".qedge":
        raise QedgeError(f"--out {out}: expected a .qedge file name")
    if model is not None and not model.exists():
        raise QedgeError(f"{model}: no such model file")

    import torch

    from qedge import checkpoint
    from qedge.compress.pipeline import (
        CompressSettings,
        default_outputs,
        evaluate_metric,
        load_datasets,
        metric_name,
        run_one,
    )
    from qedge.compress.prune import resolve_layers

    torch.manual_seed(seed)
    if model is None:
        teacher, meta = _train_baseline(data, format, out, console)
    else:
        teacher, meta = checkpoint.load(model)
    from qedge.nn import QuaternionConv2d

    if not any(isinstance(m, QuaternionConv2d) for m in teacher.modules()):
        raise QedgeError(f"{model or 'baseline'}: {meta.get('arch')} has no quaternion convolutions; qedge compress "
                         "prunes quaternion models (qcnn*, qresnet38)")
    layer_spec: str | list[str] = layers if layers in ("later", "all") else _names(layers)
    resolve_layers(teacher, layer_spec)  # fail early on bad names
    datasets = load_datasets(data, format, meta)
    metric = metric_name(datasets.task)
    base_metric = evaluate_metric(teacher, datasets.test, datasets.task, "cpu")
    console.print(f"unpruned {meta.get('arch')}: {metric} {base_metric:.4f} on {len(datasets.test)} held-out clips")

    train_overrides = _finetune_config(data, format, lr, batch_size, seed)
    if clip_sv is not None:
        if clip_sv <= 0 or clip_every <= 0:
            raise QedgeError("--clip-sv and --clip-every must be positive")
        train_overrides.update(clip_sv=float(clip_sv), clip_every=int(clip_every))
    kd_modes = [False, True] if kd_compare else [kd]
    grid = [CompressSettings(method=c, ratio=r, layers=layer_spec, round_to=round_to, kd=k,
                             kd_temperature=kd_temperature, finetune_epochs=finetune_epochs,
                             train=train_overrides, latency=report_dir is not None,
                             latency_repeats=latency_repeats)
            for c in criteria for r in ratios for k in kd_modes]
    primary = next((s.name for s in grid if s.method == method and s.ratio == ratio and s.kd == kd),
                   grid[0].name)
    targets = default_outputs(out, [s.name for s in grid], primary, report_dir)

    from qedge.profile import profile

    base_prof = profile(teacher, datasets.input_shape)
    rows = [{"name": "unpruned", "params": base_prof.params, "macs": base_prof.macs, "metric": base_metric}]
    if report_dir is not None:
        from qedge.compress.report import measure_latency

        rows[0]["latency_ms"], rows[0]["latency_backend"] = measure_latency(
            teacher, meta, datasets.input_shape[2], repeats=latency_repeats)
    for settings in grid:
        pruned, row, entry = run_one(teacher, meta, datasets, settings, baseline_metric=base_metric,
                                     device=device, log=console.print)
        new_meta = dict(meta)
        new_meta["history"] = list(meta.get("history") or []) + [entry]
        _retune_listen(pruned, new_meta, data, console)
        path = checkpoint.save(targets[settings.name], pruned, new_meta)
        row["model"] = str(path)
        rows.append(row)
        console.print(f"{settings.name}: {metric} {row['metric_before']:.4f} after pruning → "
                      f"{row['metric']:.4f} after {settings.finetune_epochs} fine-tune epochs "
                      f"({row['finetune_seconds']:.0f} s); saved {path}")

    if kd_baseline_epochs > 0:
        rows.append(_kd_baseline(teacher, datasets, rows, primary, kd_baseline_epochs, kd_temperature,
                                 train_overrides, device, report_dir, meta, latency_repeats, out, console,
                                 data))

    table = Table(title=f"qedge compress — {meta.get('arch')} on {data} ({metric}: after pruning, after "
                        "fine-tuning, Δ vs unpruned; fine-tune seconds; latency ms)")
    for col in ("run", "params", "GMACs", "pruned", "tuned", "Δ", "FT s", "ms"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for r in rows:
        delta = r["metric"] - base_metric if r.get("metric") is not None else None
        table.add_row(r["name"], f"{r['params']:,}", f"{r['macs'] / 1e9:.4f}",
                      "—" if r.get("metric_before") is None else f"{r['metric_before']:.4f}",
                      f"{r['metric']:.4f}", "—" if delta is None or r["name"] == "unpruned" else f"{delta:+.4f}",
                      "—" if r.get("finetune_seconds") is None else f"{r['finetune_seconds']:.1f}",
                      "—" if r.get("latency_ms") is None else f"{r['latency_ms']:.2f}")
    Console().print(table)
    if report_dir is not None:
        from qedge.compress.report import write_report

        paths = write_report(rows, report_dir, metric=metric,
                             title=f"qedge compress: {meta.get('arch')} on {data} ({layers} layers)")
        console.print(f"report: {paths['md']}, {paths['json']}, {paths['png']}")


def _finetune_config(data: str, fmt: str | None, lr: float | None, batch_size: int | None, seed: int) -> dict:
    """Fine-tuning overrides of :class:`qedge.train.TrainConfig`: the dataset recipe's batch size and
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


def _train_baseline(data: str, fmt: str | None, out: Path, console) -> tuple:
    """Train the dataset's default baseline with ``qedge.train.train_model``; save it beside ``out``."""
    from qedge import train

    base_path = out.with_name(f"{out.stem}-baseline.qedge")
    console.print(f"no MODEL given: training the {data} baseline first (qedge train defaults) → {base_path}")
    return train.train_model(data, format=fmt, out=base_path, log=console.print)


def _kd_baseline(teacher, datasets, rows, primary, epochs, temperature, overrides, device, report_dir,
                 meta, latency_repeats, out, console, data: str) -> dict:
    """The paper's KD-only baseline at the primary pruned run's MACs."""
    import time

    from qedge import checkpoint
    from qedge.compress.distill import train_kd_student
    from qedge.compress.pipeline import evaluate_metric
    from qedge.compress.pipeline import metric_name as datasets_metric_name
    from qedge.profile import profile
    from qedge.train import TrainConfig

    target = next(r for r in rows if r["name"] == primary)["macs"]
    config = TrainConfig.from_dict({**overrides, "epochs": epochs, "device": device,
                                    "lr": overrides["lr"] * 2, "warmup_epochs": 1.0})
    start = time.perf_counter()
    student, history, width = train_kd_student(teacher, datasets.train, datasets.test, config,
                                               task=datasets.task, target_macs=target,
                                               input_shape=datasets.input_shape, temperature=temperature)
    seconds = time.perf_counter() - start
    student.to("cpu").eval()
    prof = profile(student, datasets.input_shape)
    metric = evaluate_metric(student, datasets.test, datasets.task, "cpu")
    name = f"kd-student-w{width:g}"
    row = {"name": name, "student": True, "kd": True, "params": prof.params, "macs": prof.macs,
           "metric": metric, "finetune_seconds": round(seconds, 2), "finetune_epochs": epochs}
    if report_dir is not None:
        from qedge.compress.report import measure_latency

        row["latency_ms"], row["latency_backend"] = measure_latency(student, meta, datasets.input_shape[2],
                                                                    repeats=latency_repeats)
    folder = report_dir if report_dir is not None else out.parent
    new_meta = dict(meta)
    new_meta["arch_kwargs"] = dict(student.arch_kwargs)
    new_meta["history"] = [{"step": "kd-baseline", "teacher_arch": meta.get("arch"), "width": width,
                            "target_macs": target, "macs": prof.macs, "params": prof.params,
                            "temperature": temperature, datasets_metric_name(datasets.task): metric,
                            "seconds": round(seconds, 2), "epochs_run": epochs, "epochs": history}]
    _retune_listen(student, new_meta, data, console)
    path = checkpoint.save(Path(folder) / f"{out.stem}-{name}.qedge", student, new_meta)
    row["model"] = str(path)
    console.print(f"{name}: KD-only student ({prof.macs / 1e9:.4f} GMACs) {metric:.4f} after {epochs} epochs "
                  f"({seconds:.0f} s); saved {path}")
    return row


def _retune_listen(model, meta: dict, data: str, console) -> None:
    """An open-set model's compressed or distilled copy scores differently from its teacher: choose
    its own thresholds and smoothing (:func:`qedge.stream.tune.choose_listen_settings`) into
    ``meta["listen"]`` and record how in its last history entry."""
    if not meta.get("background_label"):
        return
    from qedge.stream.tune import choose_listen_settings

    meta["listen"], meta["history"][-1]["listen_tuning"] = choose_listen_settings(model, meta, data,
                                                                                log=console.print)
