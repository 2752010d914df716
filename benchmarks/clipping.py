"""Benchmark (i): training with and without spectral-norm clipping (design.md §7, issue 7).

Trains the default ESC-10 recipe twice with the same seed — once plain, once with every quaternion
convolution's singular values clipped to C every K optimizer steps (``qedge train --clip-sv C
--clip-every K``) — and reports, for each: held-out accuracy (best and last epoch), the largest
convolution σ_max and the network's Lipschitz upper bound at the model's window, and wall time.
Whatever it shows goes into the report.

    python -m benchmarks.clipping [--quick] [--clip-sv 1.0] [--clip-every 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_result


def run(quick: bool = False, clip_sv: float = 1.0, clip_every: int = 100) -> dict:
    from qedge.spectral import lipschitz_report
    from qedge.train import train_model

    epochs = 1 if quick else None  # None: the recipe's
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, sv in (("plain", None), (f"clip-sv {clip_sv:g}", clip_sv)):
            t0 = time.perf_counter()
            model, meta = train_model("esc10", epochs=epochs, out=Path(tmp) / f"{len(rows)}.qedge", seed=0,
                                      open_set=False,  # the figures compare clipping, on the closed set
                                      device="cpu", clip_sv=sv, clip_every=clip_every, progress=False)
            seconds = time.perf_counter() - t0
            record = meta["history"][-1]
            frames = int(record["window_frames"])
            n_mels = int(meta["features"]["n_mels"])
            report = lipschitz_report(model, (1, 4, frames, n_mels))
            sigma = max(r["sigma_max"] for r in report.rows if r["input_size"] and r["sigma_max"] is not None)
            rows.append({"run": name, "clip_sv": sv, "clip_every": clip_every if sv else None,
                         "epochs": record["epochs_run"], "accuracy": record.get("accuracy"),
                         "val_accuracy": record.get("val_accuracy"), "max_conv_sigma": float(sigma),
                         "lipschitz_bound": float(report.bound), "seconds": round(seconds, 1)})
            print(f"  {name:>12}: accuracy {rows[-1]['accuracy']:.3f} (validation {rows[-1]['val_accuracy']}), "
                  f"max conv σ {sigma:.3g}, Lipschitz bound {report.bound:.3g}, {seconds:.0f} s")
    return {"data": "esc10", "quick": quick, "rows": rows,
            "notes": "same seed and recipe; conv σ_max at each layer's input size (zero-padding grid)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one epoch each (exercise, not judge)")
    parser.add_argument("--clip-sv", type=float, default=1.0)
    parser.add_argument("--clip-every", type=int, default=100)
    args = parser.parse_args()
    path = write_result("clipping", run(args.quick, args.clip_sv, args.clip_every))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
