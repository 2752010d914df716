"""`qedge tune`: choose a model's listen defaults again (window, hop, smoothing, per-label
thresholds) on a tuning soundscape with as much event-free audio as asked, and write them into
the model file (:func:`qedge.stream.tune.choose_listen_settings`).

`qedge train` and `qedge compress` tune on 4 minutes of each quiet kind. At a budget of 1 false
alarm per hour that cannot tell a threshold giving 1 per hour from one giving 15 (the allowed
count rounds down to 0 either way); an hour of each kind can. Re-export afterwards: the ONNX
metadata carries the settings the export read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer


def tune(
    model: Path = typer.Argument(..., help="Open-set model file (.qedge) written by 'qedge train' or 'qedge compress'."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset whose validation clips make the tuning events: 'esc10', 'fsdd' or a path (default: the one the model was trained on)."),
    quiet_minutes: float = typer.Option(4.0, "--quiet-minutes", help="Minutes of each event-free kind (silence, noise, speech) in the tuning soundscape; false alarms per hour are only measurable on about an hour. About 2 CPU minutes per window tried per hour of tuning audio: 60 gives 3 quiet hours, about 6 minutes per window."),
    per_label: int = typer.Option(8, "--per-label", help="Tuning events per label (validation clips, each used once)."),
    windows: str = typer.Option("0.5,0.75,1", "--windows", help="Listen windows to try, as fractions of the training crop, comma-separated."),
    seed: int = typer.Option(1, "--seed", help="Tuning soundscape seed (the held-out evaluation uses its own)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the tuned model here (default: replace MODEL, atomically)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: the listen settings and the tuning record."),
) -> None:
    """Choose the listen window, smoothing and per-label thresholds of an open-set model on data and store them in the model file."""
    from qedge import checkpoint
    from qedge.errors import QedgeError
    from qedge.meta import ModelRecord
    from qedge.stream.tune import choose_listen_settings

    if quiet_minutes < 0:
        raise QedgeError(f"--quiet-minutes must be ≥ 0, got {quiet_minutes}")
    if per_label < 1:
        raise QedgeError(f"--per-label must be ≥ 1, got {per_label}")
    try:
        fractions = [float(x) for x in windows.split(",") if x.strip()]
    except ValueError:
        raise QedgeError(f"--windows takes fractions such as 0.5,0.75,1; got {windows!r}") from None
    if not fractions:
        raise QedgeError("--windows: give at least one window fraction")
    net, meta = checkpoint.load(model)
    record = ModelRecord.from_meta(meta, source=str(model))
    if not record.open_set:
        raise QedgeError(f"{model}: not an open-set model (no background output): its tags cannot be tuned "
                         "against event-free audio; train it with the open set (the ESC-10 recipe's default)")
    data = data or record.data_source
    if not data:
        raise QedgeError(f"{model}: the model does not record its dataset; pass --data")
    log = None if as_json else print
    listen, tuning = choose_listen_settings(net, meta, str(data), seed=seed, quiet_seconds=60.0 * quiet_minutes,
                                            per_label=per_label, fractions=fractions, log=log)
    meta["listen"] = listen
    meta["history"][-1]["listen_tuning"] = {**tuning, "by": "qedge tune", "seed": seed}
    path = checkpoint.save(out or model, net, meta)
    if as_json:
        sys.stdout.write(json.dumps({"model": str(path), "listen": listen, "tuning": tuning}) + "\n")
        return
    chosen = tuning["window"]
    print(f"{path}: listen window {chosen['window_s']:.2f} s, hop {chosen['hop_s']:.2f} s, smoothing "
          f"{listen['smooth']} (tuning segment F1 {chosen['segment_f1']:.3f}); thresholds "
          + ", ".join(f"{k} {v:g}" for k, v in listen["thresholds"].items()))
    for note in tuning["notes"]:
        print(f"  note: {note}")
    print("re-export it ('qedge export') for the ONNX metadata to carry these defaults")
