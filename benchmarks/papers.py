"""The seed paper's compression comparisons on real data, over several seeds.

1. **Criteria × ratio** (``criteria``): every pruning criterion (opnorm, l1, gm, spectral, and
   ``random`` as the floor) at p ∈ {0.25, 0.5, 0.75} of the later blocks' quaternion filters,
   each fine-tuned for the same ``--finetune-epochs``, plus the fair reference the issue asks
   for: the *unpruned* model fine-tuned for the same extra epochs. Accuracy vs MACs (the knee).
2. **Prune + fine-tune vs knowledge distillation** (``kd``): a student of the teacher's family at
   the MACs of opnorm p = 0.5, trained from scratch with KD for ``--kd-epochs``, against the
   pruned + fine-tuned model at those MACs: accuracy and compute spent — wall time and the
   multiply-accumulates of training, counted as 3 × (model MACs per training crop) per sample for
   a forward + backward pass, plus 1 × the teacher's for KD's teacher forward. The teacher's own
   training is spent by both and not counted.

Teachers are the main job's baselines (``python -m benchmarks.mainjob``: one per seed, ESC-10
folds 1–3 with a validation fifth, open set, fold 4 held out); each seed prunes its own teacher
and fine-tunes with its own seed. Every fine-tune chooses its epoch on the teacher's validation
clips and is scored once on the 80 held-out clips. Runs are cached one JSON per run under
``runs/papers/seed-S/`` (an interrupted sweep continues). Results, per seed and mean ± sd:
``benchmarks/results/papers-<machine>.json`` / ``.md`` / ``.png``.

With ``--data fsdd`` comparison 1 runs on FSDD leave-one-speaker-out instead: the teachers are
``scripts/fsdd_speakers.py``'s models (one per held-out speaker, epochs chosen without that
speaker), each pruned and fine-tuned (the recipe's 10 epochs by default, seed = the first of
``--seeds``) and scored on its held-out speaker; mean ± sd over the speakers, cached under
``runs/papers/fsdd/``, results in ``papers-fsdd-<machine>.*``. A run with other than 10 fine-tune
epochs publishes as ``papers[-fsdd]-ftE-<machine>.*`` (``--finetune-epochs 40 --criteria opnorm
--ratios 0.5 --kd-epochs 0``: the main job's 40 fine-tune epochs with their unpruned reference).

    .venv/bin/python -m benchmarks.papers [--seeds 0,1,2] [--finetune-epochs 10] [--kd-epochs 30] \\
        [--threads 1]     (about 20 min per seed on one core)
    .venv/bin/python -m benchmarks.papers --data fsdd [--speakers george,theo] [--only-seed]
        (about 20 min per speaker on one core; split the speakers over processes with --only-seed,
        then rerun without it to aggregate)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence

from benchmarks.common import cached_json, publish_study, pyplot, save_figure
from benchmarks.stream import mean_sd

ROOT = Path(__file__).resolve().parent.parent
CRITERIA = ("opnorm", "l1", "gm", "spectral", "random")
RATIOS = (0.25, 0.5, 0.75)


def _training_macs(model: Any, crop_shape: tuple[int, ...]) -> int:
    from qedge.profile import profile

    return int(profile(model, (1, *crop_shape)).macs)


def _best_val(history: Sequence[dict[str, Any]]) -> float | None:
    vals = [h["accuracy"] for h in history if h.get("accuracy") is not None]
    return max(vals) if vals else None


def prune_and_finetune(teacher: Any, meta: dict[str, Any], datasets: Any, method: str, ratio: float,
                       finetune_epochs: int, seed: int, data: str = "esc10") -> dict[str, Any]:
    """Prune ``teacher`` (later blocks, ``method`` at ``ratio``; 0 = unpruned) and fine-tune it for
    ``finetune_epochs`` with the dataset recipe's fine-tuning settings and ``seed``, epoch chosen on
    the validation clips: :func:`qedge.compress.pipeline.run_one`'s row plus the best validation
    accuracy, the kept epoch and the training MACs spent (3 × MACs per crop per sample)."""
    from qedge.compress.pipeline import CompressSettings, run_one
    from qedge.compress.run import finetune_config

    crop = tuple(datasets.train[0][0].shape)
    settings = CompressSettings(method=method, ratio=ratio, finetune_epochs=finetune_epochs,
                                train=finetune_config(data, None, None, None, seed))
    pruned, row, entry = run_one(teacher, meta, datasets, settings, baseline_metric=None,
                                 device="cpu", progress=False, log=print)
    step_macs = 3 * _training_macs(pruned, crop)
    return {**row, "val_metric": _best_val(entry["epochs"]), "best_epoch": _kept_epoch(entry["epochs"]),
            "train_macs": step_macs * len(datasets.train) * finetune_epochs}


def seed_runs(seed: int, teacher_path: Path, cache: Path, criteria: Sequence[str], ratios: Sequence[float],
              finetune_epochs: int, kd_epochs: int, data: str = "esc10") -> dict[str, Any]:
    """Every run of one seed (cached): the unpruned reference, the criteria grid, the KD student."""
    import torch

    from qedge.checkpoint import load
    from qedge.compress.distill import train_kd_student
    from qedge.compress.pipeline import evaluate_metric, load_datasets
    from qedge.compress.run import finetune_config
    from qedge.fit import TrainConfig
    from qedge.profile import profile

    if not teacher_path.exists():
        raise SystemExit(f"benchmarks.papers: no teacher {teacher_path}; run python -m benchmarks.mainjob "
                         "(esc10) or python scripts/fsdd_speakers.py (fsdd) first")
    teacher, meta = load(teacher_path)
    teacher.eval()
    datasets = load_datasets(data, None, meta)
    crop = tuple(datasets.train[0][0].shape)
    samples = len(datasets.train)
    overrides = finetune_config(data, None, None, None, seed)
    teacher_prof = profile(teacher, datasets.input_shape)
    base = {"name": "unpruned", "macs": teacher_prof.macs, "params": teacher_prof.params,
            "metric": evaluate_metric(teacher, datasets.test, datasets.task)}
    teacher_train_macs = _training_macs(teacher, crop)

    def one(method: str, ratio: float) -> dict[str, Any]:
        return prune_and_finetune(teacher, meta, datasets, method, ratio, finetune_epochs, seed, data)

    rows = {"unpruned-ft": cached_json(cache / "unpruned-ft.json", lambda: {**one("opnorm", 0.0), "name": "unpruned-ft"})}
    for method in criteria:
        for ratio in ratios:
            name = f"{method}-p{ratio:g}"
            rows[name] = cached_json(cache / f"{name}.json", lambda m=method, r=ratio: one(m, r))
            print(f"seed {seed} {name}: {rows[name]['metric_before']:.3f} after pruning → {rows[name]['metric']:.3f} "
                  f"after fine-tuning ({rows[name]['macs'] / 1e6:.1f} MMACs)", flush=True)

    kd = None
    target = rows.get("opnorm-p0.5")
    if kd_epochs > 0 and target is not None:
        def make_kd() -> dict[str, Any]:
            torch.manual_seed(seed)
            config = TrainConfig.from_dict({**overrides, "epochs": kd_epochs, "device": "cpu",
                                            "lr": overrides["lr"] * 2, "warmup_epochs": 1.0})
            t0 = time.perf_counter()
            student, history, width = train_kd_student(teacher, datasets.train, datasets.val, config,
                                                       task=datasets.task, target_macs=int(target["macs"]),
                                                       input_shape=datasets.input_shape, progress=False)
            seconds = time.perf_counter() - t0
            student.eval()
            prof = profile(student, datasets.input_shape)
            return {"name": f"kd-student-w{width:g}", "width": width, "macs": prof.macs, "params": prof.params,
                    "metric": evaluate_metric(student, datasets.test, datasets.task), "val_metric": _best_val(history),
                    "best_epoch": _kept_epoch(history), "epochs": kd_epochs, "seconds": round(seconds, 1),
                    "train_macs": (3 * _training_macs(student, crop) + teacher_train_macs) * samples * kd_epochs}
        kd = cached_json(cache / f"kd-{kd_epochs}.json", make_kd)
        print(f"seed {seed} KD student: {kd['metric']:.3f} ({kd['macs'] / 1e6:.1f} MMACs, {kd['seconds']:.0f} s)")
    return {"seed": seed, "teacher": str(teacher_path.relative_to(ROOT)) if teacher_path.is_relative_to(ROOT)
            else str(teacher_path), "unpruned": base, "runs": rows, "kd": kd, "train_samples_per_epoch": samples}


def _kept_epoch(history: Sequence[dict[str, Any]]) -> int | None:
    vals = [h.get("accuracy") for h in history]
    if not vals or None in vals:
        return len(vals) or None
    return vals.index(max(vals)) + 1


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    names = list(per_seed[0]["runs"])
    runs = {}
    for name in names:
        rs = [s["runs"][name] for s in per_seed]
        runs[name] = {"method": rs[0]["method"], "ratio": rs[0]["ratio"], "metric": mean_sd([r["metric"] for r in rs]),
                      "metric_before": mean_sd([r["metric_before"] for r in rs]),
                      "macs": mean_sd([r["macs"] for r in rs]), "params": mean_sd([r["params"] for r in rs]),
                      "finetune_seconds": mean_sd([r["finetune_seconds"] for r in rs]),
                      "train_macs": mean_sd([r["train_macs"] for r in rs])}
    out = {"unpruned": {"metric": mean_sd([s["unpruned"]["metric"] for s in per_seed]),
                        "macs": per_seed[0]["unpruned"]["macs"], "params": per_seed[0]["unpruned"]["params"]},
           "runs": runs}
    kds = [s["kd"] for s in per_seed if s.get("kd")]
    if kds:
        out["kd"] = {k: mean_sd([r[k] for r in kds]) for k in ("metric", "macs", "seconds", "train_macs")}
        out["kd"]["epochs"] = kds[0]["epochs"]
    return out


def _pct(d: dict[str, Any]) -> str:
    return "–" if d["mean"] is None else f"{100 * d['mean']:.1f} ± {100 * d['sd']:.1f}"


def _intro(result: dict[str, Any]) -> str:
    s, e = result["summary"], result["finetune_epochs"]
    teacher = f"held-out accuracy {_pct(s['unpruned']['metric'])} %"
    if result.get("data") == "fsdd":
        return (f"Teachers: the FSDD recipe trained once per held-out speaker (`scripts/fsdd_speakers.py`: "
                f"{', '.join(result['units'])}; QCNN6 ×0.25, {s['unpruned']['macs'] / 1e6:.1f} MMACs per 1 s clip, "
                f"{teacher}, epochs chosen without the held-out speaker). Each prunes its later blocks and fine-tunes "
                f"{e} epochs (seed {result['seeds'][0]}), epoch chosen on the validation clips of the other speakers; "
                "accuracy on the held-out speaker's 600 clips, mean ± sd over the held-out speakers (%).")
    return (f"Teachers: the main job's baselines (seeds {result['seeds']}; open-set QCNN6 ×0.25, "
            f"{s['unpruned']['macs'] / 1e6:.1f} MMACs per 5 s window, {teacher}). Each seed prunes its own teacher "
            f"(later blocks) and fine-tunes {e} epochs with its own seed, epoch chosen on the validation clips; "
            "accuracy on ESC-10 fold 4 (80 clips), mean ± sd over seeds (%).")


def markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    e = result["finetune_epochs"]
    data = "FSDD, leave one speaker out" if result.get("data") == "fsdd" else "ESC-10"
    per = "per held-out speaker" if result.get("data") == "fsdd" else "per seed"
    lines = [f"# The paper's compression comparisons on {data} ({result['machine']['cpu']}, "
             f"{result['threads']} thread(s))", "", _intro(result), "",
             "## 1. Criteria × ratio", "",
             f"| run | MMACs | params | after pruning | after fine-tuning | {per} |", "|---|---:|---:|---:|---:|---|"]
    for name, r in s["runs"].items():
        per = ", ".join(f"{100 * p['runs'][name]['metric']:.1f}" for p in result["per_seed"])
        label = f"unpruned + {e} epochs" if name == "unpruned-ft" else name
        lines.append(f"| {label} | {r['macs']['mean'] / 1e6:.1f} | {r['params']['mean']:,.0f} | "
                     f"{_pct(r['metric_before'])} | {_pct(r['metric'])} | {per} |")
    lines += ["", "Mean accuracy after fine-tuning by criterion (rows) and ratio (columns):", "",
              "| criterion | " + " | ".join(f"p = {p:g}" for p in result["ratios"]) + " |",
              "|---|" + "---:|" * len(result["ratios"])]
    for c in result["criteria"]:
        lines.append(f"| {c} | " + " | ".join(_pct(s["runs"][f"{c}-p{p:g}"]["metric"]) for p in result["ratios"]) + " |")
    if "kd" in s:
        k, pr = s["kd"], s["runs"]["opnorm-p0.5"]
        lines += ["", "## 2. Prune + fine-tune vs knowledge distillation at the same MACs", "",
                  "| | MMACs | accuracy | wall time | training TMACs |", "|---|---:|---:|---:|---:|",
                  f"| opnorm p = 0.5 + {e} fine-tune epochs | {pr['macs']['mean'] / 1e6:.1f} | {_pct(pr['metric'])} | "
                  f"{pr['finetune_seconds']['mean']:.0f} s | {pr['train_macs']['mean'] / 1e12:.2f} |",
                  f"| KD student from scratch, {k['epochs']} epochs | {k['macs']['mean'] / 1e6:.1f} | {_pct(k['metric'])} | "
                  f"{k['seconds']['mean']:.0f} s | {k['train_macs']['mean'] / 1e12:.2f} |"]
    lines += ["", f"![comparisons]({result['png']})", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path:
    plt = pyplot()

    s = result["summary"]
    fig, axes = plt.subplots(1, 2 if "kd" in s else 1, figsize=(12 if "kd" in s else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    for c in result["criteria"]:
        names = [f"{c}-p{p:g}" for p in result["ratios"]]
        xs = [s["runs"][n]["macs"]["mean"] / 1e6 for n in names]
        ys = [s["runs"][n]["metric"]["mean"] for n in names]
        es = [s["runs"][n]["metric"]["sd"] for n in names]
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=c, ls="--" if c == "random" else "-")
    ref = s["runs"]["unpruned-ft"]
    ax.errorbar([ref["macs"]["mean"] / 1e6], [ref["metric"]["mean"]], yerr=[ref["metric"]["sd"]], marker="*", ms=12,
                color="black", capsize=3, ls="none", label=f"unpruned + {result['finetune_epochs']} epochs")
    ax.axhline(s["unpruned"]["metric"]["mean"], color="0.5", lw=1, ls=":", label="teacher")
    fsdd = result.get("data") == "fsdd"
    ax.set_xlabel("MMACs per 1 s clip" if fsdd else "MMACs per 5 s window")
    ax.set_ylabel("held-out speaker accuracy" if fsdd else "held-out accuracy (fold 4)")
    ax.set_title(f"FSDD criteria × ratio, fine-tuned (mean ± sd over {len(result['units'])} held-out speakers)"
                 if fsdd else f"criteria × ratio, fine-tuned (mean ± sd, seeds {result['seeds']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if "kd" in s:
        ax = axes[0][1]
        pr, k = s["runs"]["opnorm-p0.5"], s["kd"]
        for label, r, secs in (("opnorm p=0.5 + FT", pr, pr["finetune_seconds"]), ("KD student", k, k["seconds"])):
            ax.errorbar([r["train_macs"]["mean"] / 1e12], [r["metric"]["mean"]], xerr=[r["train_macs"]["sd"] / 1e12],
                        yerr=[r["metric"]["sd"]], marker="o", capsize=3, label=f"{label} ({secs['mean']:.0f} s)")
        ax.set_xlabel("training compute spent (TMACs)")
        ax.set_ylabel("held-out accuracy")
        ax.set_title("same MACs: prune + fine-tune vs KD from scratch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("esc10", "fsdd"), default="esc10",
                        help="esc10: the main job's teachers over --seeds; fsdd: one teacher per held-out speaker")
    parser.add_argument("--seeds", default="0,1,2", help="esc10: teacher and fine-tune seeds; fsdd: the first is "
                        "the fine-tune seed")
    parser.add_argument("--speakers", default="george,jackson,lucas,theo,yweweler", help="fsdd: held-out speakers")
    parser.add_argument("--criteria", default=",".join(CRITERIA))
    parser.add_argument("--ratios", default=",".join(f"{r:g}" for r in RATIOS))
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--kd-epochs", type=int, default=30, help="0 skips comparison 2")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--teachers", type=Path, default=None,
                        help="esc10: folder with seed-S/baseline.qedge (default runs/main-seeds, python -m "
                        "benchmarks.mainjob); fsdd: folder with SPEAKER.qedge (default runs/fsdd-speakers, "
                        "python scripts/fsdd_speakers.py)")
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "papers")
    parser.add_argument("--only-seed", action="store_true",
                        help="run the given seeds' (speakers') runs and stop (to run them in parallel processes)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    criteria = [c.strip() for c in args.criteria.split(",") if c.strip()]
    ratios = [float(r) for r in args.ratios.split(",") if r.strip()]
    tag = f"ft{args.finetune_epochs}"
    if args.data == "fsdd":  # leave one speaker out: the units of the mean are the held-out speakers
        units = [v.strip() for v in args.speakers.split(",") if v.strip()]
        teachers = args.teachers or ROOT / "runs" / "fsdd-speakers"
        seeds, kd_epochs = seeds[:1], 0
        per_seed = [{**seed_runs(seeds[0], teachers / f"{u}.qedge", args.cache / "fsdd" / tag / u, criteria, ratios,
                                 args.finetune_epochs, 0, data="fsdd"), "speaker": u} for u in units]
    else:
        units = [f"seed {s}" for s in seeds]
        teachers, kd_epochs = args.teachers or ROOT / "runs" / "main-seeds", args.kd_epochs
        per_seed = [seed_runs(s, teachers / f"seed-{s}" / "baseline.qedge", args.cache / tag / f"seed-{s}",
                              criteria, ratios, args.finetune_epochs, kd_epochs) for s in seeds]
    if args.only_seed:
        return
    if len(per_seed) < 2:
        raise SystemExit("benchmarks.papers: give at least two seeds (speakers) for mean ± sd")
    result = {"data": args.data, "seeds": seeds, "units": units, "criteria": criteria, "ratios": ratios,
              "finetune_epochs": args.finetune_epochs, "kd_epochs": kd_epochs, "threads": args.threads,
              "per_seed": per_seed, "summary": summarise(per_seed)}
    name = "papers" if args.data == "esc10" else "papers-fsdd"
    publish_study(name if args.finetune_epochs == 10 else f"{name}-ft{args.finetune_epochs}", result, plot, markdown)


if __name__ == "__main__":
    main()
