"""Leave-one-speaker-out FSDD: train the default recipe once per held-out speaker.

The default split holds out one speaker (yweweler); with five speakers, one held-out speaker says
little about the next voice. This trains ``qedge train --data fsdd`` with each speaker held out in
turn, keeps one model and one JSON per speaker under --out (a speaker already done is skipped and
a model already trained is only evaluated, so an interrupted run continues), and writes summary.md / summary.json over every speaker done:
accuracy on the held-out speaker (epoch chosen on the validation clips of the other speakers, never
on the held-out one), the worst digit and what it is mistaken for.

    python scripts/fsdd_speakers.py [--speakers george,theo] [--out runs/fsdd-speakers] [--publish]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def held_out_speaker(speaker: str, out: Path) -> dict:
    """Train with ``speaker`` held out; :func:`qedge.evaluate.evaluate` on that speaker."""
    from qedge.checkpoint import load, read_meta
    from qedge.data import find_dataset
    from qedge.evaluate import evaluate
    from qedge.train import train_model

    path = out / f"{speaker}.qedge"
    done = path.exists() and read_meta(path)["history"][-1].get("completed")
    model, meta = load(path) if done else train_model("fsdd", test_speaker=speaker, out=path, progress=True)
    result = evaluate(model, meta, find_dataset("fsdd"), batch_size=64)  # the model's held-out speaker
    record = meta["history"][-1]
    return {"speaker": speaker, "accuracy": record["accuracy"], "val_accuracy": record.get("val_accuracy"),
            "best_epoch": record["best_epoch"], "seconds": record["seconds"], "labels": result["labels"],
            "per_class": result["per_class"], "confusion": result["confusion"]}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def summary(results: list[dict]) -> tuple[str, dict]:
    rows, lines = [], ["| held-out speaker | accuracy (validation accuracy of the chosen epoch) | chosen epoch | "
                       "worst digit: recall, mistaken for |", "|---|---:|---:|---|"]
    for r in sorted(results, key=lambda r: r["speaker"]):
        worst = min(range(len(r["labels"])), key=lambda i: r["per_class"][i]["recall"])
        recall = r["per_class"][worst]["recall"]
        mistakes = list(r["confusion"][worst])
        mistakes[worst] = -1
        lines.append(f"| {r['speaker']} | {100 * r['accuracy']:.1f} % ({_pct(r.get('val_accuracy'))}) | "
                     f"{r.get('best_epoch', '–')} | "
                     f"\"{r['labels'][worst]}\": {100 * recall:.0f} %, as \"{r['labels'][int(np.argmax(mistakes))]}\" |")
        rows.append({"speaker": r["speaker"], "accuracy": r["accuracy"], "val_accuracy": r.get("val_accuracy"),
                     "best_epoch": r.get("best_epoch"), "seconds": r.get("seconds"),
                     "worst_digit": r["labels"][worst], "worst_recall": recall})
    accs = [r["accuracy"] for r in rows]
    mean = float(np.mean(accs))
    sd = float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0
    lines.append(f"| **mean ± sd of {len(rows)}** | **{100 * mean:.1f} ± {100 * sd:.1f} %** | | |")
    return "\n".join(lines) + "\n", {"speakers": rows, "mean_accuracy": mean, "sd_accuracy": sd}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speakers", default="george,jackson,lucas,theo,yweweler")
    parser.add_argument("--out", type=Path, default=Path("runs/fsdd-speakers"))
    parser.add_argument("--publish", action="store_true",
                        help="also write benchmarks/results/fsdd-speakers-<machine>.json / .md")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for speaker in args.speakers.split(","):
        path = args.out / f"{speaker}.json"
        if path.exists():
            print(f"{speaker}: done before ({path})")
            continue
        result = held_out_speaker(speaker, args.out)
        path.write_text(json.dumps(result, indent=1))
        print(f"{speaker}: accuracy {result['accuracy']:.3f}")
    results = [json.loads(p.read_text()) for p in sorted(args.out.glob("*.json")) if p.stem != "summary"]
    table, data = summary(results)
    (args.out / "summary.md").write_text(table)
    (args.out / "summary.json").write_text(json.dumps(data, indent=1))
    print(table)
    if args.publish:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from benchmarks.common import machine, write_result

        path = write_result("fsdd-speakers", data)
        path.with_suffix(".md").write_text(f"# FSDD, leave one speaker out ({machine()['cpu']})\n\n{table}")
        print(f"wrote {path} and its .md")


if __name__ == "__main__":
    main()
