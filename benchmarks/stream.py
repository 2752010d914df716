"""Benchmark: live tagging on continuous held-out audio (issue #13's stream evaluation).

For each model (by default the main job's deployed models, ``runs/main-seeds/seed-S/pruned.onnx``
of ``python -m benchmarks.mainjob``, one per training seed, run in ONNX Runtime as deployed; where
those do not exist, the two committed ESC-10 test models: the open-set one, trained with the
built-in event-free audio and tuned thresholds, and the closed-set one of the same recipe and
seed), and each soundscape seed, :func:`qedge.stream.score.evaluate_stream` builds the seeded
held-out soundscape (ESC-10 fold 4 events at 10 dB SNR on noise and speech beds, quiet stretches of
silence, noise and unheard speech), runs it through the listen loop with the model's defaults and
scores it with sed_eval. Reported per model: mean ± sd over seeds of segment F1 (1 s), event F1
(0.5 s onset collar), event recall and median onset latency, and false alarms per hour per quiet
kind pooled over the seeds with a 95 % Poisson upper bound (the per-seed values are in the JSON).

    python -m benchmarks.stream [--quick] [--seeds 0,1,2] [--quiet-minutes M] [--model FILE.qedge|.onnx ...]

Prints a table and writes ``benchmarks/results/stream-<machine>.json`` (``--name`` renames it:
``stream-fixtures-<machine>.json`` is the run on the two committed test models).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

from benchmarks.common import write_result

ROOT = Path(__file__).resolve().parent.parent
MAIN_JOB_MODELS = [ROOT / "runs" / "main-seeds" / f"seed-{s}" / "pruned.onnx" for s in (0, 1, 2)]
FIXTURE_MODELS = [ROOT / "tests" / "fixtures" / "esc10-qcnn6-openset.qedge",
                  ROOT / "tests" / "fixtures" / "esc10-qcnn6.qedge"]
FIGURES = ("segment_f1", "event_f1", "event_recall")


def mean_sd(values: Sequence[float | None]) -> dict[str, float | None]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": statistics.fmean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def pool_false_alarms(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """False alarms per quiet kind summed over runs (each with ``false_alarms: {kind: {count, hours}}``),
    per hour and with a 95 % Poisson upper bound."""
    from qedge.stream.score import poisson_upper

    pooled = {}
    for kind in sorted({k for r in runs for k in r["false_alarms"]}):
        count = sum(r["false_alarms"].get(kind, {}).get("count", 0) for r in runs)
        hours = sum(r["false_alarms"].get(kind, {}).get("hours", 0.0) for r in runs)
        pooled[kind] = {"count": count, "hours": round(hours, 4), "per_hour": count / hours if hours else None,
                        "per_hour_95_upper": poisson_upper(count, hours)}
    return pooled


def clip_accuracy(meta: dict[str, Any] | None) -> float | None:
    """The model's offline clip accuracy on its held-out split: that of its last training or
    compression step (a pruned model's is after fine-tuning)."""
    return next((float(h["accuracy"]) for h in reversed((meta or {}).get("history") or []) if "accuracy" in h), None)


def run_seed(path: Path, data: str, seed: int, quiet_seconds: float, snr_db: float,
             threads: int | None = None) -> dict[str, Any]:
    """One soundscape seed's stream figures for one model (a ``.qedge`` in PyTorch, an ``.onnx`` in
    ONNX Runtime with ``threads`` intra-op threads)."""
    from qedge.data import find_dataset
    from qedge.stream.score import evaluate_stream, load_stream_model

    backend, record, _ = load_stream_model(path, threads=threads)
    t0 = time.perf_counter()
    rep = evaluate_stream(backend, record, find_dataset(data), seed=seed, quiet_seconds=quiet_seconds, snr_db=snr_db)
    row = {
        "seed": seed, **{k: rep[k] for k in FIGURES}, "onset_latency_median_s": rep["onset_latency_s"]["median"],
        "false_alarms": {k: {"count": v["count"], "hours": v["hours"]} for k, v in rep["false_alarms"].items()},
        "events": rep["events"], "soundscape_seconds": rep["soundscape_seconds"],
        "real_time_factor": rep["real_time_factor"], "seconds": round(time.perf_counter() - t0, 1),
        "window_s": rep["window_s"], "hop_s": rep["hop_s"], "open_set": bool(record.background_label),
    }
    fa = ", ".join(f"{k} {v['count']}" for k, v in rep["false_alarms"].items())
    print(f"  {path.parent.name}/{path.name} seed {seed}: segment F1 {rep['segment_f1']:.3f}, event F1 "
          f"{rep['event_f1']:.3f}, recall {rep['event_recall']:.3f}, onset latency {rep['onset_latency_s']['median']}, "
          f"false alarms {fa} ({row['seconds']:.0f} s)", flush=True)
    return row


def model_row(path: Path, per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """One model's per-seed figures and their summary (an ONNX file's clip accuracy is read from
    the ``.qedge`` beside it)."""
    from qedge.checkpoint import read_meta

    qedge_file = path if path.suffix == ".qedge" else path.with_suffix(".qedge")
    meta = read_meta(qedge_file) if qedge_file.exists() else None
    return {
        "model": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
        "backend": "ONNX Runtime, CPU" if path.suffix == ".onnx" else "PyTorch eager (TorchBackend), CPU",
        "open_set": per_seed[0]["open_set"], "clip_accuracy": clip_accuracy(meta),
        "window_s": per_seed[0]["window_s"], "hop_s": per_seed[0]["hop_s"],
        "summary": {**{k: mean_sd([s[k] for s in per_seed]) for k in FIGURES},
                    "onset_latency_median_s": mean_sd([s["onset_latency_median_s"] for s in per_seed])},
        "false_alarms_pooled": pool_false_alarms(per_seed), "per_seed": per_seed,
    }


def run_all(models: Sequence[Path], data: str, seeds: Sequence[int], quiet_seconds: float, snr_db: float,
            jobs: int = 1) -> list[dict[str, Any]]:
    """Every (model, seed) run, ``jobs`` at a time in separate processes (one thread each when
    ``jobs`` > 1, so runs do not fight over the cores); one row per model."""
    from concurrent.futures import ProcessPoolExecutor

    pairs = [(Path(m), s) for m in models for s in seeds]
    if jobs <= 1:
        results = [run_seed(m, data, s, quiet_seconds, snr_db) for m, s in pairs]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(run_seed, m, data, s, quiet_seconds, snr_db, 1) for m, s in pairs]
            results = [f.result() for f in futures]
    rows = []
    for m in models:
        rows.append(model_row(Path(m), [r for (pm, _), r in zip(pairs, results) if pm == Path(m)]))
    return rows


def fmt_mean_sd(d: dict[str, float | None], spec: str = ".3f") -> str:
    return "–" if d["mean"] is None else f"{d['mean']:{spec}} ± {d['sd']:{spec}}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one seed, 15 s of each quiet kind (exercise, not judge)")
    parser.add_argument("--model", type=Path, action="append", help="a .qedge or exported .onnx model "
                        "(repeatable; default: the main job's deployed models of runs/main-seeds where they "
                        "exist, else the committed open-set and closed-set ESC-10 test models)")
    parser.add_argument("--data", default="esc10")
    parser.add_argument("--seeds", default="0,1,2", help="soundscape seeds, comma-separated")
    parser.add_argument("--quiet-minutes", type=float, default=5.0, help="minutes of each quiet kind per seed")
    parser.add_argument("--snr", type=float, default=10.0)
    parser.add_argument("--name", default="stream", help="result name: writes <results>/<name>-<machine>.json "
                        "(the benchmark report reads 'stream')")
    parser.add_argument("--jobs", type=int, default=1, help="(model, seed) runs at a time, each its own process "
                        "at one thread (default 1: one run at a time, default threads)")
    args = parser.parse_args()
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",") if s.strip()]
    quiet = 15.0 if args.quick else 60.0 * args.quiet_minutes
    models = args.model or ([p for p in MAIN_JOB_MODELS if p.exists()] or FIXTURE_MODELS)
    rows = run_all([Path(p).resolve() for p in models], args.data, seeds, quiet, args.snr, jobs=args.jobs)
    print(f"{'model':<32} {'segment F1':>14} {'event F1':>14} {'recall':>14} {'latency s':>12}  false alarms/h")
    for r in rows:
        s = r["summary"]
        fa = ", ".join(f"{k} {v['per_hour']:.0f} (≤{v['per_hour_95_upper']:.0f})" for k, v in r["false_alarms_pooled"].items())
        print(f"{'/'.join(Path(r['model']).parts[-2:]):<32} {fmt_mean_sd(s['segment_f1']):>14} {fmt_mean_sd(s['event_f1']):>14} "
              f"{fmt_mean_sd(s['event_recall']):>14} {fmt_mean_sd(s['onset_latency_median_s'], '.2f'):>12}  {fa}")
    path = write_result(args.name, {"quick": args.quick, "data": args.data, "seeds": seeds, "snr_db": args.snr,
                                   "quiet_seconds_per_kind": quiet, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
