"""`qedge evaluate`: accuracy / mAP, per-class figures and a confusion matrix of a model file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer


def evaluate(
    model: Path = typer.Argument(..., help="Model file (.qedge) written by 'qedge train' or 'qedge compress'."),
    data: str = typer.Option(..., "--data", help="'esc10', 'fsdd' (the shared recordings) or a dataset path."),
    format: Optional[str] = typer.Option(None, "--format", help="Dataset format: esc, fsdd, folder, csv, audioset, gtzan (default: detect)."),
    split: str = typer.Option("test", "--split", help="'test': the held-out split the model was trained with (its --test-fold / --test-speaker, else the dataset's default); 'all': every clip under --data."),
    batch_size: int = typer.Option(32, "--batch-size", help="Clips per forward pass."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Feature cache folder (default: $QEDGE_CACHE or ~/.cache/qedge)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (accuracy or map, n, per_class, confusion)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the confusion matrix (or per-class AP) as a PNG here."),
) -> None:
    """Evaluate a model on a dataset; labels are matched by name to the model's vocabulary."""
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
