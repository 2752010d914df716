"""`qedge evaluate`: accuracy / mAP, per-class figures and a confusion matrix of a model file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer


def evaluate(
    model: Path = typer.Argument(..., help="Model file (.qedge) written by 'qedge train' or 'qedge compress'; with --stream also an exported .onnx."),
    data: str = typer.Option(..., "--data", help="'esc10', 'fsdd' (the shared recordings) or a dataset path."),
    format: Optional[str] = typer.Option(None, "--format", help="Dataset format: esc, fsdd, folder, csv, audioset, gtzan (default: detect)."),
    split: str = typer.Option("test", "--split", help="'test': the held-out split the model was trained with (its --test-fold / --test-speaker, else the dataset's default); 'all': every clip under --data."),
    batch_size: int = typer.Option(32, "--batch-size", help="Clips per forward pass."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Feature cache folder (default: $QEDGE_CACHE or ~/.cache/qedge)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (accuracy or map, n, per_class, confusion)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the confusion matrix (or per-class AP; with --stream the timeline) as a PNG here."),
    stream: bool = typer.Option(False, "--stream", help="Stream evaluation: a seeded soundscape of the held-out clips on noise/speech beds with quiet stretches of silence, noise and speech, run through the listen loop with the model's defaults and scored with sed_eval (segment F1 at 1 s, event F1 with a 0.5 s onset collar), false alarms per hour per kind, event recall, onset latency."),
    seed: int = typer.Option(0, "--seed", help="With --stream: soundscape seed (same seed, same audio)."),
    quiet_minutes: float = typer.Option(2.0, "--quiet-minutes", help="With --stream: minutes of each quiet kind (silence, noise, speech) at least."),
    snr: float = typer.Option(10.0, "--snr", help="With --stream: event-to-bed SNR in dB."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="With --stream: one threshold for every label instead of the model's."),
    test_fold: Optional[str] = typer.Option(None, "--test-fold", help="With --stream on an .onnx: the held-out fold (a .qedge knows its own)."),
    test_speaker: Optional[str] = typer.Option(None, "--test-speaker", help="With --stream on an .onnx: the held-out speaker."),
) -> None:
    """Evaluate a model on a dataset; labels are matched by name to the model's vocabulary.

    With --stream: how the model does live, on continuous audio, through `qedge listen`'s loop.
    """
    if stream:
        _evaluate_stream(model, data, format, seed, quiet_minutes, snr, threshold, test_fold, test_speaker,
                         as_json, plot)
        return
    from qedge.checkpoint import load
    from qedge.data import find_dataset
    from qedge.errors import QedgeError
    from qedge.evaluate import evaluate as run_evaluate
    from qedge.evaluate import plot_confusion, summarize

    if split not in ("test", "all"):
        raise QedgeError(f"--split must be 'test' or 'all', got {split!r}")
    net, meta = load(model)
    index = find_dataset(data, format)
    result = run_evaluate(net, meta, index, split=split, batch_size=batch_size, device=device,
                          cache_dir=cache_dir)
    result["model"] = str(model)
    result["split"] = split
    if plot is not None:
        plot_confusion(result, plot, title=f"{model.name} on {data} ({split})")
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    print(f"{model}: {meta['arch']} on {data} ({split} split)")
    print(summarize(result))
    if plot is not None:
        print(f"plot: {plot}")


def _evaluate_stream(model: Path, data: str, format: Optional[str], seed: int, quiet_minutes: float, snr: float,
                     threshold: Optional[float], test_fold: Optional[str], test_speaker: Optional[str],
                     as_json: bool, plot: Optional[Path]) -> None:
    from qedge.data import find_dataset
    from qedge.errors import QedgeError
    from qedge.stream.score import evaluate_stream, load_stream_model, plot_stream

    if quiet_minutes < 0:
        raise QedgeError(f"--quiet-minutes must be ≥ 0, got {quiet_minutes}")
    backend, record, _ = load_stream_model(model, test_fold=test_fold, test_speaker=test_speaker)
    index = find_dataset(data, format)
    log = None if as_json else print
    report = evaluate_stream(backend, record, index, seed=seed, quiet_seconds=60.0 * quiet_minutes, snr_db=snr,
                             log=log, threshold=threshold)
    report["model"] = str(model)
    if plot is not None:
        plot_stream(report, [lab for lab in record.labels if lab != record.background_label], plot,
                    title=f"{model.name} on a held-out {data} soundscape (seed {seed}, {snr:g} dB SNR)")
    if as_json:
        sys.stdout.write(json.dumps({k: v for k, v in report.items() if k not in ("timeline",)}) + "\n")
        return
    fa = ", ".join(f"{k} {v['count']} in {60 * v['hours']:.1f} min ({v['per_hour']:.1f}/h, ≤ {v['per_hour_95_upper']:.1f}/h at 95 %)"
                   for k, v in report["false_alarms"].items())
    lat = report["onset_latency_s"]["median"]
    print(f"{model}: stream evaluation on {data} ({report['held_out']}), window {report['window_s']:.2f} s, "
          f"hop {report['hop_s']:.2f} s")
    print(f"  segment F1 (1 s) {report['segment_f1']:.3f}   event F1 (0.5 s collar) {report['event_f1']:.3f}   "
          f"event recall {report['event_recall']:.3f} of {report['events']}   median onset latency "
          + ("–" if lat is None else f"{lat:.2f} s"))
    print(f"  false alarms: {fa}")
    if plot is not None:
        print(f"plot: {plot}")
