"""QCNN vs the multi-channel real CNN (MCCNN, same 4-component input) vs the plain CNN (log-mel
only), at matched MACs and at matched parameters, on ESC-10, over several seeds.

A quaternion convolution costs the MACs of the real convolution of the same real width but holds a
quarter of its weights (design.md §3). So against QCNN6 ×0.25 (the ESC-10 recipe) a real CNN6 at
the same width matches its MACs with ~4× the parameters, and one at about half the width matches
its parameters with ~¼ of the MACs. Widths are found by :func:`qedge.profile.width_for_budget`
(MACs at the 5 s scoring window). Every model trains with the ESC-10 recipe (closed set, so the
comparison is of classifiers only; epochs chosen on the validation fifth of folds 1–3), scored
once on fold 4 (80 clips). Models are cached under ``runs/archs/``; results go to
``benchmarks/results/archs-<machine>.json`` / ``.md`` / ``.png``.

    .venv/bin/python -m benchmarks.archs [--seeds 0,1,2]     (2–4 min per model at one thread; split a run
        over two processes with --only, then rerun without it to aggregate the cached models)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks.common import publish_study, pyplot, save_figure
from benchmarks.stream import mean_sd

ROOT = Path(__file__).resolve().parent.parent


def contenders(classes: int, input_shape: tuple[int, ...], n_mels: int) -> dict[str, tuple[str, float]]:
    """name -> (arch, width): QCNN6 at the recipe width and the real CNNs matched to it."""
    import torch

    from qedge.models import build
    from qedge.profile import count_params, profile, width_for_budget
    from qedge.recipes import RECIPES

    q_width = float(RECIPES["esc10"]["width"])
    with torch.device("meta"):
        q = build("qcnn6", classes, width=q_width, n_mels=n_mels)
    macs, params = profile(q, input_shape).macs, count_params(q)
    out = {"qcnn6": ("qcnn6", q_width)}
    for arch in ("mccnn6", "cnn6"):
        for measure, budget in (("macs", macs), ("params", params)):
            out[f"{arch} @ {measure}"] = (arch, width_for_budget(arch, budget, input_shape, classes, measure=measure,
                                                                  n_mels=n_mels))
    return out


def train(arch: str, width: float, seed: int, path: Path, epochs: int | None) -> dict[str, Any]:
    from qedge.checkpoint import read_meta
    from qedge.meta import train_record
    from qedge.train import train_model

    if not (path.exists() and train_record(read_meta(path)).get("completed")):
        t0 = time.perf_counter()
        train_model("esc10", arch=arch, width=width, open_set=False, seed=seed, epochs=epochs, out=path,
                    device="cpu", progress=False, resume=path.with_name(path.name + ".resume").exists())
        print(f"trained {path.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    rec = train_record(read_meta(path))
    return {"accuracy": rec["accuracy"], "val_accuracy": rec.get("val_accuracy"), "best_epoch": rec.get("best_epoch"),
            "params": rec["params"], "macs": rec["macs"], "seconds": rec["seconds"]}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# QCNN vs MCCNN vs CNN at matched MACs and parameters ({result['machine']['cpu']})", "",
             f"ESC-10 recipe, closed set, seeds {result['seeds']}; epochs chosen on the validation clips, accuracy on "
             "fold 4 (80 clips), mean ± sd over seeds.", "",
             "| model | width | params | MMACs / 5 s | held-out accuracy | per seed | train time |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for name, s in result["summary"].items():
        per = ", ".join(f"{100 * r['accuracy']:.1f}" for r in result["per_seed"][name])
        acc = s["accuracy"]
        lines.append(f"| {name} | {s['width']:g} | {s['params']:,} | {s['macs'] / 1e6:.1f} | "
                     f"{100 * acc['mean']:.1f} ± {100 * acc['sd']:.1f} % | {per} | {s['seconds']['mean']:.0f} s |")
    lines += ["", f"![archs]({result['png']})", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path:
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "macs", "MMACs per 5 s window"), (axes[1], "params", "parameters")):
        for name, s in result["summary"].items():
            x = s[key] / (1e6 if key == "macs" else 1)
            ax.errorbar([x], [s["accuracy"]["mean"]], yerr=[s["accuracy"]["sd"]], marker="o", capsize=3, label=name)
            for r in result["per_seed"][name]:
                ax.plot(x, r["accuracy"], "k.", ms=3)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("held-out accuracy (fold 4)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"ESC-10, closed set: QCNN6 vs real CNN6 (4-component input: MCCNN6; log-mel only: CNN6), "
                 f"seeds {result['seeds']}", fontsize=10)
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--only", default=None, help="comma-separated contender names (to split a run)")
    parser.add_argument("--models", type=Path, default=ROOT / "runs" / "archs")
    args = parser.parse_args()
    import torch

    from qedge.data import find_dataset
    from qedge.recipes import RECIPES
    from qedge.runtime.features import FeatureConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    feats = FeatureConfig.from_dict({**FeatureConfig().to_dict(), **RECIPES["esc10"].get("features", {})})
    frames = feats.num_frames(int(float(RECIPES["esc10"]["clip_seconds"]) * feats.sample_rate))
    classes = len(find_dataset("esc10").labels)
    chosen = contenders(classes, (1, 4, frames, feats.n_mels), feats.n_mels)
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k in {n.strip() for n in args.only.split(",")}}
    per_seed: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
    for seed in seeds:
        for name, (arch, width) in chosen.items():
            path = args.models / f"{arch}-w{width:g}-s{seed}" / "model.qedge"
            path.parent.mkdir(parents=True, exist_ok=True)
            row = train(arch, width, seed, path, args.epochs)
            per_seed[name].append({"seed": seed, **row})
            print(f"seed {seed} {name} (w {width:g}): {row['accuracy']:.3f} held out", flush=True)
    if args.only:
        return
    summary = {name: {"arch": chosen[name][0], "width": chosen[name][1], "params": rows[0]["params"],
                      "macs": rows[0]["macs"], "accuracy": mean_sd([r["accuracy"] for r in rows]),
                      "seconds": mean_sd([r["seconds"] for r in rows])}
               for name, rows in per_seed.items()}
    publish_study("archs", {"seeds": seeds, "data": "esc10", "open_set": False, "per_seed": per_seed,
                            "summary": summary}, plot, markdown)


if __name__ == "__main__":
    main()
