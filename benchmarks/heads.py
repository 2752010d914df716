"""Open-set output head, chosen by measurement: softmax with a background class vs sigmoid heads.

Issue #13 asks for the open-set output form to be chosen by measurement. This trains the ESC-10
recipe (open set on: silence, coloured noise and FSDD speech as event-free audio, events mixed into
beds at 0–20 dB) with each head for every seed —

- ``softmax``: one more class, "background", for the event-free items (as Edge Impulse projects do);
- ``sigmoid``: one-vs-rest scores trained with BCE, event-free items with all-zero targets (as
  PANNs and DCASE systems do);

both with thresholds and smoothing tuned on the training split's soundscape (what ``qedge train``
stores in the model) — and scores each model on the same held-out material:

- clip top-1 accuracy on ESC-10 fold 4 (argmax over the ten event classes for both heads);
- the stream evaluation of ``qedge evaluate --stream`` (:func:`qedge.stream.score.evaluate_stream`:
  fold-4 events at 10 dB SNR on noise/speech beds, quiet stretches of silence, noise and unheard
  speech, the real listen loop, sed_eval): segment F1 (1 s), event F1, event recall, median onset
  latency and false alarms per hour per quiet kind. Every model hears the same soundscape.

Models are cached under ``runs/heads/`` (rerunning only scores what exists). Results, per seed and
as mean ± sd, go to ``benchmarks/results/heads-<machine>.json`` / ``.md`` / ``.png``.

    .venv/bin/python -m benchmarks.heads [--seeds 0,1,2] [--quiet-minutes 5]   (about 40 min on 2 cores)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks.common import publish_study, pyplot, save_figure
from benchmarks.stream import fmt_mean_sd, mean_sd, pool_false_alarms

ROOT = Path(__file__).resolve().parent.parent

HEADS = ("softmax", "sigmoid")
FIGURES = ("clip_accuracy", "segment_f1", "event_f1", "event_recall", "onset_latency_median_s")


def train(head: str, seed: int, folder: Path) -> Path:
    """The ESC-10 recipe's open-set model with ``head`` at ``seed`` (cached)."""
    from qedge.train import train_model

    path = folder / f"{head}-s{seed}.qedge"
    if not path.exists():
        t0 = time.perf_counter()
        train_model("esc10", head=head, seed=seed, out=path, progress=False, log=print)
        print(f"trained {path.name} in {time.perf_counter() - t0:.0f} s")
    return path


def clip_accuracy(model: Any, meta: dict[str, Any]) -> float:
    """Top-1 over the event classes (a background column is ignored) on the held-out clips,
    each scored on its centred ``clip_seconds`` crop."""
    import numpy as np

    from qedge.data import ClipDataset, find_dataset
    from qedge.inference import predict
    from qedge.meta import ModelRecord

    record = ModelRecord.from_meta(meta)
    test = record.test_split(find_dataset("esc10"))[1]
    dataset = ClipDataset(test, dict(record.features), clip_seconds=record.clip_seconds, train=False,
                          labels=list(record.labels))
    logits, _ = predict(model, dataset)
    events = [i for i, lab in enumerate(record.labels) if lab != record.background_label]
    predicted = np.asarray(events)[np.argmax(logits[:, events], axis=1)]
    truth = np.asarray([record.labels.index(c.labels[0]) for c in test.clips])
    return float(np.mean(predicted == truth))


def score(path: Path, soundscape_seed: int, quiet_seconds: float) -> dict[str, Any]:
    from qedge.checkpoint import load
    from qedge.data import find_dataset
    from qedge.inference import TorchBackend
    from qedge.meta import ModelRecord
    from qedge.stream.score import evaluate_stream

    model, meta = load(path)
    record = ModelRecord.from_meta(meta, source=str(path))
    rep = evaluate_stream(TorchBackend(model, meta), record, find_dataset("esc10"), seed=soundscape_seed,
                          quiet_seconds=quiet_seconds, snr_db=10.0)
    return {"model": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
            "clip_accuracy": clip_accuracy(model, meta),
            **{k: rep[k] for k in ("segment_f1", "event_f1", "event_recall")},
            "onset_latency_median_s": rep["onset_latency_s"]["median"],
            "false_alarms": {k: {"count": v["count"], "hours": v["hours"]} for k, v in rep["false_alarms"].items()},
            "thresholds": meta.get("listen", {}).get("thresholds"), "smooth": meta.get("listen", {}).get("smooth")}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {**{k: mean_sd([r[k] for r in rows]) for k in FIGURES}, "false_alarms_pooled": pool_false_alarms(rows)}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Open-set output head: softmax + background class vs sigmoid heads ({result['machine']['cpu']})", "",
             f"ESC-10 recipe, open set on, training seeds {result['seeds']}; held-out fold-4 soundscape seed "
             f"{result['soundscape_seed']} (events at 10 dB SNR, {result['quiet_seconds_per_kind'] / 60:g} min of each "
             "quiet kind), the model's own tuned thresholds. Mean ± sd over training seeds.", "",
             "| head | clip top-1 | segment F1 (1 s) | event F1 | event recall | onset latency s | false alarms: count / h "
             "(95 % upper /h) |", "|---|---|---|---|---|---|---|"]
    for head in HEADS:
        s = result["summary"][head]
        fa = "; ".join(f"{k} {v['count']} / {v['hours']:.2f} h (≤ {v['per_hour_95_upper']:.0f})"
                       for k, v in s["false_alarms_pooled"].items())
        lines.append(f"| {head} | {fmt_mean_sd(s['clip_accuracy'])} | {fmt_mean_sd(s['segment_f1'])} | {fmt_mean_sd(s['event_f1'])} | "
                     f"{fmt_mean_sd(s['event_recall'])} | {fmt_mean_sd(s['onset_latency_median_s'], '.2f')} | {fa} |")
    lines += ["", "Per seed:", "", "| head | seed | clip top-1 | segment F1 | event F1 | recall | latency s | "
              "false alarms (silence/noise/speech) |", "|---|---|---|---|---|---|---|---|"]
    for head in HEADS:
        for seed, r in zip(result["seeds"], result["per_seed"][head]):
            fa = "/".join(str(r["false_alarms"].get(k, {}).get("count", "–")) for k in ("silence", "noise", "speech"))
            lat = "–" if r["onset_latency_median_s"] is None else f"{r['onset_latency_median_s']:.2f}"
            lines.append(f"| {head} | {seed} | {r['clip_accuracy']:.3f} | {r['segment_f1']:.3f} | {r['event_f1']:.3f} | "
                         f"{r['event_recall']:.3f} | {lat} | {fa} |")
    lines += ["", f"![heads]({result['png']})", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path:
    plt = pyplot()

    names = ("clip_accuracy", "segment_f1", "event_f1", "event_recall")
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, head in enumerate(HEADS):
        s = result["summary"][head]
        xs = [j + (i - 0.5) * 0.38 for j in range(len(names))]
        ax.bar(xs, [s[n]["mean"] or 0 for n in names], width=0.36, yerr=[s[n]["sd"] or 0 for n in names],
               capsize=3, label=head)
        for j, n in enumerate(names):
            for r in result["per_seed"][head]:
                ax.plot(xs[j], r[n], "k.", ms=4)
    ax.set_xticks(range(len(names)), ["clip top-1", "segment F1", "event F1", "event recall"])
    ax.set_ylim(0, 1)
    ax.set_title("ESC-10 open set: softmax + background class vs sigmoid heads (mean ± sd, dots: seeds)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated")
    parser.add_argument("--soundscape-seed", type=int, default=0)
    parser.add_argument("--quiet-minutes", type=float, default=5.0, help="minutes of each quiet kind")
    parser.add_argument("--models", type=Path, default=ROOT / "runs" / "heads", help="model cache folder")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.models.mkdir(parents=True, exist_ok=True)
    per_seed: dict[str, list[dict[str, Any]]] = {h: [] for h in HEADS}
    for seed in seeds:
        for head in HEADS:
            row = score(train(head, seed, args.models), args.soundscape_seed, 60.0 * args.quiet_minutes)
            per_seed[head].append({"seed": seed, **row})
            print(f"{head} seed {seed}: top-1 {row['clip_accuracy']:.3f}, segment F1 {row['segment_f1']:.3f}, "
                  f"event F1 {row['event_f1']:.3f}, recall {row['event_recall']:.3f}, false alarms "
                  + ", ".join(f"{k} {v['count']}" for k, v in row["false_alarms"].items()))
    result = {"seeds": seeds, "soundscape_seed": args.soundscape_seed, "quiet_seconds_per_kind": 60.0 * args.quiet_minutes,
              "per_seed": per_seed, "summary": {h: summarise(per_seed[h]) for h in HEADS}}
    publish_study("heads", result, plot, markdown)


if __name__ == "__main__":
    main()
