"""Pruned QCNN vs pruned MCCNN (the seed paper's open question), on ESC-10, over several seeds.

The paper compares an unpruned QCNN with the multi-channel real CNN (MCCNN: the same 4-component
input, real convolutions) and leaves open whether the QCNN's parameter economy survives pruning.
Here both are pruned the same way: the same criterion (opnorm by default, the paper's), the same
ratios p ∈ {0.25, 0.5, 0.75} of the later blocks' filters (whole quaternion filters in the QCNN,
real output channels in the MCCNN: :func:`qedge.compress.prune.prune`), the same fine-tuning
(the recipe's fine-tuning settings, ``--finetune-epochs``, epoch chosen on the validation clips),
plus each teacher unpruned and fine-tuned for the same epochs (the fair reference).

Teachers are :mod:`benchmarks.archs`' closed-set models (cached under ``runs/archs/``; trained
there if missing): QCNN6 ×0.25 (the recipe), MCCNN6 at the QCNN's MACs (~4× its parameters) and
MCCNN6 at its parameters (~¼ of its MACs). Runs are cached one JSON per run under
``runs/prunedarchs/``; results, per seed and mean ± sd, in
``benchmarks/results/prunedarchs-<machine>.json`` / ``.md`` / ``.png``.

    .venv/bin/python -m benchmarks.prunedarchs [--seeds 0,1,2] [--criteria opnorm] [--threads 1]
        (about 40 s per fine-tune at one thread: ~25 min for three seeds)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.common import cached_json, publish_study, pyplot, save_figure
from benchmarks.stream import mean_sd

ROOT = Path(__file__).resolve().parent.parent
TEACHERS = ("qcnn6", "mccnn6 @ macs", "mccnn6 @ params")
RATIOS = (0.25, 0.5, 0.75)


def teacher_runs(name: str, arch: str, width: float, seed: int, criteria: list[str], ratios: list[float],
                 finetune_epochs: int, models: Path, cache: Path) -> dict[str, Any]:
    """One teacher of one seed: its unpruned figures, the unpruned + fine-tuned reference and every
    criterion × ratio, pruned and fine-tuned (each run cached)."""
    from benchmarks.archs import train
    from benchmarks.papers import prune_and_finetune
    from qedge.checkpoint import load
    from qedge.compress.pipeline import evaluate_metric, load_datasets
    from qedge.profile import profile

    path = models / f"{arch}-w{width:g}-s{seed}" / "model.qedge"
    path.parent.mkdir(parents=True, exist_ok=True)
    train(arch, width, seed, path, None)
    teacher, meta = load(path)
    teacher.eval()
    datasets = load_datasets("esc10", None, meta)
    prof = profile(teacher, datasets.input_shape)
    base = {"macs": prof.macs, "params": prof.params, "metric": evaluate_metric(teacher, datasets.test, datasets.task)}
    folder = cache / f"{arch}-w{width:g}-s{seed}" / f"ft{finetune_epochs}"
    runs = {"unpruned-ft": cached_json(folder / "unpruned-ft.json", lambda: prune_and_finetune(
        teacher, meta, datasets, "opnorm", 0.0, finetune_epochs, seed))}
    for method in criteria:
        for ratio in ratios:
            key = f"{method}-p{ratio:g}"
            runs[key] = cached_json(folder / f"{key}.json", lambda m=method, r=ratio: prune_and_finetune(
                teacher, meta, datasets, m, r, finetune_epochs, seed))
            print(f"seed {seed} {name} {key}: {runs[key]['metric_before']:.3f} after pruning → "
                  f"{runs[key]['metric']:.3f} fine-tuned ({runs[key]['params']:,} params, "
                  f"{runs[key]['macs'] / 1e6:.1f} MMACs)", flush=True)
    return {"seed": seed, "teacher": name, "arch": arch, "width": width, "unpruned": base, "runs": runs}


def summarise(per_seed: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out = {}
    for name, seeds in per_seed.items():
        runs = {key: {"metric": mean_sd([s["runs"][key]["metric"] for s in seeds]),
                      "metric_before": mean_sd([s["runs"][key]["metric_before"] for s in seeds]),
                      "params": seeds[0]["runs"][key]["params"], "macs": seeds[0]["runs"][key]["macs"]}
                for key in seeds[0]["runs"]}
        out[name] = {"arch": seeds[0]["arch"], "width": seeds[0]["width"],
                     "unpruned": {"metric": mean_sd([s["unpruned"]["metric"] for s in seeds]),
                                  "params": seeds[0]["unpruned"]["params"], "macs": seeds[0]["unpruned"]["macs"]},
                     "runs": runs}
    return out


def _pct(d: dict[str, Any]) -> str:
    return f"{100 * d['mean']:.1f} ± {100 * d['sd']:.1f}"


def markdown(result: dict[str, Any]) -> str:
    e = result["finetune_epochs"]
    lines = [f"# Pruned QCNN vs pruned MCCNN on ESC-10 ({result['machine']['cpu']}, {result['threads']} thread(s))", "",
             f"Closed-set teachers of `benchmarks.archs` (seeds {result['seeds']}); each pruned in its later blocks "
             f"(whole quaternion filters / real channels), fine-tuned {e} epochs with its seed, epoch chosen on the "
             "validation clips; accuracy on ESC-10 fold 4 (80 clips), mean ± sd over seeds (%).", "",
             "| teacher | run | params | MMACs / 5 s | after pruning | after fine-tuning | per seed |",
             "|---|---|---:|---:|---:|---:|---|"]
    for name, t in result["summary"].items():
        per = ", ".join(f"{100 * s['unpruned']['metric']:.1f}" for s in result["per_seed"][name])
        lines.append(f"| {name} | unpruned | {t['unpruned']['params']:,} | {t['unpruned']['macs'] / 1e6:.1f} | | "
                     f"{_pct(t['unpruned']['metric'])} | {per} |")
        for key, r in t["runs"].items():
            per = ", ".join(f"{100 * s['runs'][key]['metric']:.1f}" for s in result["per_seed"][name])
            label = f"unpruned + {e} epochs" if key == "unpruned-ft" else key
            before = "" if key == "unpruned-ft" else _pct(r["metric_before"])
            lines.append(f"| {name} | {label} | {r['params']:,} | {r['macs'] / 1e6:.1f} | {before} | "
                         f"{_pct(r['metric'])} | {per} |")
    lines += ["", f"![pruned archs]({result['png']})", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path:
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, label in ((axes[0], "params", "parameters"), (axes[1], "macs", "MMACs per 5 s window")):
        scale = 1e6 if key == "macs" else 1
        for i, (name, t) in enumerate(result["summary"].items()):
            color = f"C{i}"
            for c in result["criteria"]:
                names = [f"{c}-p{p:g}" for p in result["ratios"]]
                xs = [t["unpruned"][key] / scale] + [t["runs"][n][key] / scale for n in names]
                ys = [t["runs"]["unpruned-ft"]["metric"]["mean"]] + [t["runs"][n]["metric"]["mean"] for n in names]
                es = [t["runs"]["unpruned-ft"]["metric"]["sd"]] + [t["runs"][n]["metric"]["sd"] for n in names]
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=color,
                            label=f"{name} ({c}; p = 0, {', '.join(f'{p:g}' for p in result['ratios'])})")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("held-out accuracy (fold 4), fine-tuned")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"ESC-10, closed set: pruned + fine-tuned ({result['finetune_epochs']} epochs) QCNN6 vs MCCNN6, "
                 f"mean ± sd over seeds {result['seeds']}", fontsize=10)
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--criteria", default="opnorm")
    parser.add_argument("--ratios", default=",".join(f"{r:g}" for r in RATIOS))
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--teachers", default=",".join(TEACHERS), help="comma-separated benchmarks.archs contenders")
    parser.add_argument("--only-seed", action="store_true", help="run the given seeds and stop (parallel processes)")
    parser.add_argument("--models", type=Path, default=ROOT / "runs" / "archs")
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "prunedarchs")
    args = parser.parse_args()
    import torch

    from benchmarks.archs import contenders
    from qedge.data import find_dataset
    from qedge.recipes import RECIPES
    from qedge.runtime.features import FeatureConfig

    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    criteria = [c.strip() for c in args.criteria.split(",") if c.strip()]
    ratios = [float(r) for r in args.ratios.split(",") if r.strip()]
    feats = FeatureConfig.from_dict({**FeatureConfig().to_dict(), **RECIPES["esc10"].get("features", {})})
    frames = feats.num_frames(int(float(RECIPES["esc10"]["clip_seconds"]) * feats.sample_rate))
    every = contenders(len(find_dataset("esc10").labels), (1, 4, frames, feats.n_mels), feats.n_mels)
    names = [n.strip() for n in args.teachers.split(",") if n.strip()]
    unknown = [n for n in names if n not in every]
    if unknown:
        raise SystemExit(f"benchmarks.prunedarchs: unknown teacher(s) {unknown}; choose from {list(every)}")
    per_seed: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for seed in seeds:
        for name in names:
            arch, width = every[name]
            per_seed[name].append(teacher_runs(name, arch, width, seed, criteria, ratios, args.finetune_epochs,
                                               args.models, args.cache))
    if args.only_seed:
        return
    if len(seeds) < 2:
        raise SystemExit("benchmarks.prunedarchs: give at least two seeds for mean ± sd")
    publish_study("prunedarchs", {"seeds": seeds, "criteria": criteria, "ratios": ratios,
                                  "finetune_epochs": args.finetune_epochs, "threads": args.threads,
                                  "per_seed": per_seed, "summary": summarise(per_seed)}, plot, markdown)


if __name__ == "__main__":
    main()
