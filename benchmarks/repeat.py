"""When does a training figure repeat exactly? Same seed, same data, different thread counts.

Trains the ESC-10 recipe (closed set, a few epochs, to keep it short) three times with the same
seed in fresh processes — torch intra-op threads 1, 1 and 2 — and reports, for each pair, the
largest weight difference and the held-out accuracies. Same seed + same thread count must give
bit-identical weights (qedge seeds every RNG and uses deterministic kernels on the CPU); a
different thread count changes the order of float reductions inside convolutions, so the
trajectories part after the first steps, and the figure moves within the spread that
``benchmarks.mainjob`` measures across seeds.

    .venv/bin/python -m benchmarks.repeat [--epochs 5]      (about 3 min on 2 cores)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import machine, write_result

ROOT = Path(__file__).resolve().parent.parent


def train(out: Path, threads: int, epochs: int) -> None:
    code = (f"import torch; torch.set_num_threads({threads}); from qedge.train import train_model; "
            f"train_model('esc10', epochs={epochs}, open_set=False, seed=0, device='cpu', out={str(out)!r}, progress=False)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmarks.repeat: training failed: {proc.stderr.strip().splitlines()[-1]}")


def max_weight_difference(a: Path, b: Path) -> float:
    from qedge.checkpoint import load

    ma, _ = load(a)
    mb, _ = load(b)
    return max(float((x - y).abs().max()) for x, y in zip(ma.state_dict().values(), mb.state_dict().values())
               if x.is_floating_point())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    from qedge.checkpoint import read_meta
    from qedge.meta import train_record

    runs = {"1 thread": 1, "1 thread, again": 1, "2 threads": 2}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, threads in runs.items():
            paths[name] = Path(tmp) / f"{name.replace(' ', '_').replace(',', '')}.qedge"
            train(paths[name], threads, args.epochs)
        accuracy = {n: train_record(read_meta(p)).get("accuracy") for n, p in paths.items()}
        pairs = {"same threads": max_weight_difference(paths["1 thread"], paths["1 thread, again"]),
                 "1 vs 2 threads": max_weight_difference(paths["1 thread"], paths["2 threads"])}
    result = {"epochs": args.epochs, "data": "esc10 (closed set)", "seed": 0, "accuracy": accuracy,
              "max_weight_difference": pairs}
    path = write_result("repeat", result)
    for name, acc in accuracy.items():
        print(f"{name:>16}: held-out accuracy {acc:.4f}")
    for name, diff in pairs.items():
        print(f"{name:>16}: largest weight difference {diff:.3g}")
    print(f"wrote {path} ({machine()['cpu']})")


if __name__ == "__main__":
    main()
