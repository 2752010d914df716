"""The main job over several seeds: how far its figures move between clean runs.

Runs ``scripts/main_job.py --seed S --out runs/main-seeds/seed-S`` for every seed (a seed whose
report exists is only read, one whose models exist is only re-measured) and aggregates the
per-seed ``report.json`` files into mean ± sd (sample sd, n = number of seeds):

- held-out clip accuracy (ESC-10 fold 4, 80 clips) of the baseline, the pruned model right after
  pruning, after fine-tuning, and its int8 export; the validation accuracy the epochs were chosen on;
- ``qedge listen`` window top-1 on the held-out stream (fp32 and int8) and which precision the job
  deployed (the faster one on this machine);
- the stream evaluation of the deployed model (segment F1, event F1, event recall, onset latency,
  false alarms pooled over seeds per quiet kind) and tags on 20 s of silence / noise / speech.

Each seed's whole job runs in its own process with the default thread count, as a user runs it,
so a seed's figures repeat exactly on the same machine, thread count and library versions.
Results: ``benchmarks/results/mainjob-<machine>.json`` (per seed and summary), ``.md``, ``.png``.

    .venv/bin/python -m benchmarks.mainjob [--seeds 0,1,2]     (about 13 min per new seed on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import publish_study, pyplot, save_figure
from benchmarks.stream import fmt_mean_sd, mean_sd, pool_false_alarms

ROOT = Path(__file__).resolve().parent.parent

#: (key, what it is) of the per-seed accuracy figures, in table order.
ACCURACIES = (
    ("baseline", "baseline (unpruned)"),
    ("baseline_val", "baseline, validation (epoch choice)"),
    ("after_pruning", "pruned, before fine-tuning"),
    ("pruned", "pruned, fine-tuned (fp32)"),
    ("int8", "pruned, int8"),
    ("listen_fp32", "listen window top-1, fp32"),
    ("listen_int8", "listen window top-1, int8"),
)
STREAM = ("segment_f1", "event_f1", "event_recall", "onset_latency_median_s")


def run_seed(seed: int, folder: Path) -> dict[str, Any]:
    """The main job at ``seed`` in ``folder`` (reused where done); its report."""
    report = folder / "report.json"
    if not report.exists():
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "main_job.py"), "--seed", str(seed),
                               "--out", str(folder)], cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if proc.returncode != 0:
            raise SystemExit(f"benchmarks.mainjob: the main job failed at seed {seed} (exit {proc.returncode})")
    return json.loads(report.read_text())


def seed_row(seed: int, folder: Path, report: dict[str, Any]) -> dict[str, Any]:
    """The figures of one seed's report (and its baseline's validation accuracy)."""
    from qedge.checkpoint import read_meta
    from qedge.meta import train_record

    b, p, listen, stream = report["baseline"], report["pruned"], report["listen"], report["stream"]
    trained = train_record(read_meta(folder / "baseline.qedge"))
    return {
        "seed": seed, "baseline": b["accuracy"], "baseline_val": trained.get("val_accuracy"),
        "baseline_epoch": trained.get("best_epoch"), "baseline_epochs": trained.get("epochs_run"),
        "after_pruning": p["accuracy_before_finetune"],
        "pruned": p["accuracy"], "int8": p["int8_accuracy"],
        "listen_fp32": listen["fp32"]["window_accuracy"], "listen_int8": listen["int8"]["window_accuracy"],
        "listen_window_s": listen["fp32"].get("window_s"), "listen_hop_s": listen["fp32"].get("hop_s"),
        "deployed": report.get("deployed", {}).get("precision"),
        "inference_p50_ms": report.get("deployed", {}).get("inference_p50_ms"),
        "segment_f1": stream["segment_f1"], "event_f1": stream["event_f1"], "event_recall": stream["event_recall"],
        "onset_latency_median_s": (stream.get("onset_latency_s") or {}).get("median"),
        "false_alarms": {k: {"count": v["count"], "hours": v["hours"]} for k, v in stream["false_alarms"].items()},
        "event_free_tags": {k: v["tags"] for k, v in report["event_free"].items()},
        "params": {"baseline": b["params"], "pruned": p["params"]}, "macs": {"baseline": b["macs"], "pruned": p["macs"]},
        "seconds": {"train": b["train_seconds"], "finetune": p["finetune_seconds"], "job": report["wall_seconds"]},
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {**{k: mean_sd([r[k] for r in rows]) for k, _ in ACCURACIES},
            **{k: mean_sd([r[k] for r in rows]) for k in STREAM},
            "false_alarms_pooled": pool_false_alarms(rows),
            "event_free_tags": {k: sum(r["event_free_tags"][k] for r in rows) for k in rows[0]["event_free_tags"]},
            "deployed": {p: sum(r["deployed"] == p for r in rows) for p in ("fp32", "int8")}}


def _pct(d: dict[str, float | None]) -> str:
    return "–" if d["mean"] is None else f"{100 * d['mean']:.1f} ± {100 * d['sd']:.1f} %"


def markdown(result: dict[str, Any]) -> str:
    s, rows = result["summary"], result["per_seed"]
    lines = [f"# Main job over seeds {result['seeds']} ({result['machine']['cpu']}, {result['machine']['cores']} cores)",
             "", "`scripts/main_job.py --seed S`: ESC-10 folds 1–3 (a fifth of their recordings held back to choose "
             "epochs on), fold 4 held out (80 clips). Mean ± sd over seeds.", "",
             "| figure | mean ± sd | " + " | ".join(f"seed {r['seed']}" for r in rows) + " |",
             "|---|---|" + "---|" * len(rows)]
    for key, what in ACCURACIES:
        vals = " | ".join("–" if r[key] is None else f"{100 * r[key]:.1f} %" for r in rows)
        lines.append(f"| {what} | {_pct(s[key])} | {vals} |")
    for key in STREAM:
        spec = ".2f" if key.endswith("_s") else ".3f"
        vals = " | ".join("–" if r[key] is None else format(r[key], spec) for r in rows)
        lines.append(f"| stream {key.replace('_', ' ')} | {fmt_mean_sd(s[key], spec)} | {vals} |")
    fa = "; ".join(f"{k} {v['count']} in {v['hours']:.2f} h (≤ {v['per_hour_95_upper']:.0f}/h)"
                   for k, v in s["false_alarms_pooled"].items())
    lines += ["", f"- stream false alarms, pooled over seeds: {fa}",
              "- tags on 20 s of silence / noise / speech with the model's defaults, summed over seeds: "
              + " / ".join(str(s["event_free_tags"][k]) for k in ("silence", "noise", "speech")),
              f"- deployed precision (int8 only when > 5 % faster in the job's two listen runs): fp32 {s['deployed']['fp32']}×, "
              f"int8 {s['deployed']['int8']}× — "
              + "; ".join(f"seed {r['seed']}: fp32 {r['inference_p50_ms']['fp32']:.2f} ms, int8 "
                          f"{r['inference_p50_ms']['int8']:.2f} ms" for r in rows if r["inference_p50_ms"]),
              "- listen window / hop the tuner chose for the pruned model: "
              + ", ".join(f"{r['listen_window_s']:.2f} / {r['listen_hop_s']:.2f} s" for r in rows if r.get("listen_window_s")),
              "- baseline epoch kept: " + ", ".join(f"{r['baseline_epoch']} of {r['baseline_epochs']}" for r in rows),
              "- training / fine-tuning time: " + ", ".join(f"{r['seconds']['train']:.0f} / {r['seconds']['finetune']:.0f} s"
                                                            for r in rows)
              + "; wall time of each seed's last job run (a run that reuses the trained models takes under a minute): "
              + ", ".join(f"{r['seconds']['job']:.0f} s" for r in rows),
              "", f"![main job over seeds]({result['png']})", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path:
    plt = pyplot()

    keys = [k for k, _ in ACCURACIES] + ["segment_f1", "event_recall"]
    names = ["baseline", "baseline\nval", "pruned\nbefore FT", "pruned\nFT", "int8", "listen\nfp32", "listen\nint8",
             "stream\nseg F1", "stream\nrecall"]
    s = result["summary"]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.bar(range(len(keys)), [s[k]["mean"] or 0 for k in keys], yerr=[s[k]["sd"] or 0 for k in keys], capsize=3,
           color="tab:blue", alpha=0.7)
    for j, k in enumerate(keys):
        for r in result["per_seed"]:
            if r[k] is not None:
                ax.plot(j, r[k], "k.", ms=5)
    ax.set_xticks(range(len(keys)), names, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy / F1 / recall")
    ax.set_title(f"main job, ESC-10 fold 4: mean ± sd over seeds {result['seeds']} (dots: seeds)")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="seeds, comma-separated")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "main-seeds", help="one folder per seed here")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if len(seeds) < 2:
        raise SystemExit("benchmarks.mainjob: give at least two seeds (a spread needs more than one run)")
    rows = []
    for seed in seeds:
        folder = args.runs / f"seed-{seed}"
        rows.append(seed_row(seed, folder, run_seed(seed, folder)))
        print(f"seed {seed}: baseline {rows[-1]['baseline']:.3f}, pruned {rows[-1]['pruned']:.3f}, "
              f"int8 {rows[-1]['int8']:.3f}, stream segment F1 {rows[-1]['segment_f1']:.3f}", flush=True)
    publish_study("mainjob", {"seeds": seeds, "per_seed": rows, "summary": summarise(rows)}, plot, markdown)


if __name__ == "__main__":
    main()
