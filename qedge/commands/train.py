"""`qedge train`: train a (quaternion) audio classifier on a bundled or user dataset."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer


def train(
    data: str = typer.Option(..., "--data", help="'esc10', 'fsdd' (the shared recordings) or a dataset path."),
    format: Optional[str] = typer.Option(None, "--format", help="Dataset format: esc, fsdd, folder, csv, audioset, gtzan (default: detect)."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Model: qcnn6 qcnn10 qcnn14 qresnet38 cnn6 cnn10 cnn14 resnet38 mccnn14 (default: the dataset's recipe)."),
    width: Optional[float] = typer.Option(None, "--width", help="Channel-width multiplier (default: recipe)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs (default: recipe)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Batch size per process (default: recipe)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate of the warm-up + cosine schedule (default: recipe)."),
    clip_seconds: Optional[float] = typer.Option(None, "--clip-seconds", help="Evaluation/deployment window in seconds (default: recipe, else the longest clip)."),
    train_seconds: Optional[float] = typer.Option(None, "--train-seconds", help="Length of the random training crops (default: recipe, else --clip-seconds)."),
    mixup: Optional[float] = typer.Option(None, "--mixup", help="Mixup Beta(a, a) parameter, 0 = off (default: recipe)."),
    specaugment: Optional[bool] = typer.Option(None, "--specaugment/--no-specaugment", help="Time/mel masking on all four components (default: recipe)."),
    trim: Optional[float] = typer.Option(None, "--trim", help="Training augmentation: silence up to this fraction of each sound at each end (partial words/events), 0 = off (default: recipe)."),
    endpoint: Optional[float] = typer.Option(None, "--endpoint", help="Training augmentation: with this probability cut a clip's quiet edges at a random 10–25 dB below its loudest 10 ms, as a voice-activity detector would; 0 = off (default: recipe)."),
    mean_norm: Optional[bool] = typer.Option(None, "--mean-norm/--no-mean-norm", help="Remove each window's mean log-mel per mel bin inside the model (recording-gain and microphone invariance; default: recipe)."),
    open_set: Optional[bool] = typer.Option(None, "--open-set/--closed-set", help="Open set: add a 'background' output trained on event-free audio (silence, coloured noise, the bundled FSDD speech unless the data is speech) and mix events into such beds at 0–20 dB SNR, then choose per-label thresholds and smoothing on a tuning soundscape (stored in the model): the model says nothing when none of its classes sounds (default: the recipe's, on for ESC-10)."),
    head: Optional[str] = typer.Option(None, "--head", help="Output head: softmax (one class per clip; with the open set an explicit 'background' class) or sigmoid (one-vs-rest scores trained with BCE, as PANNs/DCASE systems; 'nothing' is every score under its threshold). Multi-label data always uses sigmoid (default: the recipe's, else softmax for single-label data)."),
    background: Optional[list[Path]] = typer.Option(None, "--background", help="A folder of recordings of the deployment site (no target sounds in them) used as more event-free audio; implies --open-set. Repeatable."),
    out: Path = typer.Option(Path("model.qedge"), "--out", "-o", help="Model file to write (best weights; <out>.resume holds the resume state)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when available), cpu, cuda or cuda:N."),
    amp: str = typer.Option("auto", "--amp", help="Mixed precision on CUDA: auto, bf16, fp16 or off (CPU always fp32)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (initialisation, sampling, augmentation)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from <out>.resume after an interruption (same result as an uninterrupted run)."),
    workers: int = typer.Option(0, "--workers", help="DataLoader worker processes."),
    clip_sv: Optional[float] = typer.Option(None, "--clip-sv", help="Clip every convolution's singular values to C during training (design.md §7)."),
    clip_every: int = typer.Option(50, "--clip-every", help="Apply --clip-sv every K optimizer steps."),
    test_fold: Optional[str] = typer.Option(None, "--test-fold", help="Hold out this fold (default: the dataset's own split)."),
    test_speaker: Optional[str] = typer.Option(None, "--test-speaker", help="Hold out this speaker (FSDD)."),
    val_fraction: Optional[float] = typer.Option(None, "--val-fraction", help="Share of the training recordings held back to choose the epoch on (never the test split); 0 = fit on all and keep the last epoch (default: recipe, 0.2)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Feature cache folder (default: $QEDGE_CACHE or ~/.cache/qedge)."),
    as_json: bool = typer.Option(False, "--json", help="Print the final summary as one JSON object (no progress bars)."),
) -> None:
    """Train a model and write it (one .qedge file: weights, labels, features, history).

    Works with no option besides --data on the bundled sets; under `torchrun --nproc-per-node N`
    it trains data-parallel (only rank 0 writes files and prints).
    """
    from qedge.distributed import context
    from qedge.meta import ModelRecord
    from qedge.train import train_model

    ctx = context(device)
    console = None
    if not as_json and ctx.is_main:
        from rich.console import Console

        console = Console(stderr=True)
    log = (lambda msg: console.print(msg)) if console is not None else None
    _model, meta = train_model(
        data, format=format, arch=arch, width=width, epochs=epochs, batch_size=batch_size, lr=lr,
        clip_seconds=clip_seconds, train_seconds=train_seconds, mixup=mixup, specaugment=specaugment,
        trim=trim, endpoint=endpoint, mean_norm=mean_norm, open_set=open_set, background=background or (), head=head,
        out=out, seed=seed, device=device, amp=amp, workers=workers,
        clip_sv=clip_sv, clip_every=clip_every,
        test_fold=test_fold, test_speaker=test_speaker, val_fraction=val_fraction, cache_dir=cache_dir,
        resume=resume,
        progress=not as_json, log=log,
    )
    if not ctx.is_main:
        return
    record = ModelRecord.from_meta(meta, source=str(out))
    rec = record.history[-1]
    metric = "map" if record.task == "multi-label" else "accuracy"
    summary = {
        "file": str(out), "arch": record.arch, "width": record.arch_kwargs.get("width"),
        metric: rec.get(metric), "val_" + metric: rec.get("val_" + metric),
        "selected_on": rec.get("selected_on"), "best_epoch": rec.get("best_epoch"), "epochs": rec.get("epochs_run"),
        "params": rec.get("params"), "macs": rec.get("macs"), "seconds": rec.get("seconds"),
        "train_clips": rec.get("train_clips"), "val_clips": rec.get("val_clips"), "test_clips": rec.get("test_clips"),
        "device": rec.get("device"), "world_size": rec.get("world_size"),
    }
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return

    def fmt(v: Optional[float]) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    value = summary[metric]
    console.print(
        f"[bold]{out}[/]: {record.arch} width {summary['width']:g} — {metric} "
        f"{fmt(value)} on {summary['test_clips']} test clips (epoch {summary['best_epoch']}/{summary['epochs']}, "
        + (f"chosen on {summary['val_clips']} validation clips: {fmt(summary['val_' + metric])}"
           if summary["val_clips"] else "the last") + f"), {summary['params']:,} params, "
        f"{summary['macs'] / 1e6:,.1f} M MACs per {record.clip_seconds:g} s window, "
        f"{summary['seconds']:.0f} s on {summary['device']}"
        + (f" × {summary['world_size']}" if summary["world_size"] > 1 else "")
    )
