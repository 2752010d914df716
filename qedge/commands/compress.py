"""``qedge compress``: prune a model at quaternion granularity (real channels for a real CNN / MCCNN
baseline), fine-tune (optionally with KD from the unpruned model), save, and report (design.md §6).

The command parses and checks its options, loads the model (or trains the dataset's baseline),
calls :func:`qedge.compress.run.compress_model`, prints the summary table and writes the report
(:func:`qedge.compress.run.write_compress_report`). Torch and the compression library are
imported inside the function, so ``qedge --help`` stays light.
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
    method: str = typer.Option("opnorm", "--method", help="Filter criterion: opnorm, l1, gm, spectral or "
                               "random (a reproducible floor to judge the others by)."),
    ratio: float = typer.Option(0.5, "--ratio", help="Fraction p of filters removed per pruned layer "
                        "(whole quaternion filters; real channels in a real cnn*/mccnn* model)."),
    layers: str = typer.Option("later", "--layers", help="'later' (the model's later blocks), 'all', or "
                               "comma-separated layer names."),
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
                                          "e.g. opnorm,l1,gm,random."),
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
    """Prune a model (whole quaternion filters; real channels of a real baseline), fine-tune it, save it,
    print a summary."""
    from rich.console import Console
    from rich.table import Table

    from qedge.compress.run import check_options

    console = Console(stderr=True)
    ratios = _floats(sweep, "--sweep") or [ratio]
    criteria = _names(methods) or [method]
    check_options(criteria, ratios, data=data, format=format, out=out, round_to=round_to,
                  finetune_epochs=finetune_epochs, kd_baseline_epochs=kd_baseline_epochs, lr=lr,
                  batch_size=batch_size, clip_sv=clip_sv, clip_every=clip_every, seed=seed)
    if model is not None and not model.exists():
        raise QedgeError(f"{model}: no such model file")

    import torch

    from qedge import checkpoint
    from qedge.compress.run import compress_model, train_baseline, write_compress_report

    torch.manual_seed(seed)
    if model is None:
        teacher, meta = train_baseline(data, format, out, log=console.print)
    else:
        teacher, meta = checkpoint.load(model)
    result = compress_model(
        teacher, meta, data, format, out=out, criteria=criteria, ratios=ratios, layers=layers,
        kd_modes=[False, True] if kd_compare else [kd], kd_temperature=kd_temperature,
        finetune_epochs=finetune_epochs, lr=lr, batch_size=batch_size, clip_sv=clip_sv, clip_every=clip_every,
        round_to=round_to, kd_baseline_epochs=kd_baseline_epochs, report_dir=report_dir,
        latency_repeats=latency_repeats, device=device, seed=seed, method=method, ratio=ratio, kd=kd,
        source=str(model or "baseline"), log=console.print)

    metric, base_metric = result.metric, result.base_metric
    table = Table(title=f"qedge compress — {result.arch} on {data} ({metric}: after pruning, after "
                        "fine-tuning, Δ vs unpruned; fine-tune seconds; latency ms)")
    for col in ("run", "params", "GMACs", "pruned", "tuned", "Δ", "FT s", "ms"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for r in result.rows:
        delta = r["metric"] - base_metric if r.get("metric") is not None else None
        table.add_row(r["name"], f"{r['params']:,}", f"{r['macs'] / 1e9:.4f}",
                      "—" if r.get("metric_before") is None else f"{r['metric_before']:.4f}",
                      f"{r['metric']:.4f}", "—" if delta is None or r["name"] == "unpruned" else f"{delta:+.4f}",
                      "—" if r.get("finetune_seconds") is None else f"{r['finetune_seconds']:.1f}",
                      "—" if r.get("latency_ms") is None else f"{r['latency_ms']:.2f}")
    Console().print(table)
    if report_dir is not None:
        paths = write_compress_report(result, report_dir)
        console.print(f"report: {paths['md']}, {paths['json']}, {paths['png']}")
