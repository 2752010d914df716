"""Benchmark (c): latency against MACs across pruning ratios, and against the machine's ceiling.

A QCNN (untrained: latency does not depend on the weights' values) is pruned by
:func:`qedge.compress.prune.prune` at ratios p ∈ {0, 0.25, 0.5, 0.75}, each without width rounding
and with ``round_to`` = 16 and 32 (real widths multiples of 16 / 32). Every variant is exported
(:func:`qedge.export.onnx.export_onnx`: folded, BN fused) and run by ONNX Runtime fp32, batch 1.
All sessions are timed interleaved (one call of each per round, warm-up excluded), so the rows are
comparable. MACs are THE counter's (:func:`qedge.profile.profile`). Reported:

- the least-squares line latency_ms = a·GMACs + b with R²;
- achieved GMAC/s = MACs / latency for each variant, as a fraction of the machine's dense
  convolution ceiling measured in the same run, at the same thread count
  (:func:`benchmarks.common.dense_conv_ceiling`, PyTorch; and
  :func:`benchmarks.common.ort_conv_ceiling`, the same convolution in ONNX Runtime).

    python -m benchmarks.macs [--quick] [--arch qcnn14] [--width 0.5] [--seconds 5] [--layers all]

Writes ``<results>/macs-<machine>.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import dense_conv_ceiling, interleaved_ms, linear_fit, ort_conv_ceiling, write_result

RATIOS = (0.0, 0.25, 0.5, 0.75)
ROUND_TO = (None, 16, 32)
CLASSES = 10


def configs(quick: bool) -> list[tuple[float, int | None]]:
    """(ratio, round_to) pairs: ratio 0 once (rounding is a no-op there), then every combination."""
    if quick:
        return [(0.0, None), (0.5, None), (0.5, 16)]
    return [(0.0, None)] + [(r, n) for r in RATIOS if r > 0 for n in ROUND_TO]


def run(quick: bool = False, arch: str | None = None, width: float | None = None, seconds: float | None = None,
        layers: str = "all", method: str = "l1", threads: int = 1, repeats: int | None = None) -> dict[str, Any]:
    """Prune, export and time every configuration; fit latency against MACs; compare with the ceiling."""
    import torch

    from qedge.compress.prune import prune
    from qedge.export.onnx import export_onnx, model_info, ort_session
    from qedge.models import build
    from qedge.profile import profile
    from qedge.runtime.features import FeatureConfig
    from qedge.runtime.model_info import INPUT_NAME, OUTPUT_NAME

    arch = arch or ("qcnn6" if quick else "qcnn14")
    width = width or (0.25 if quick else 0.5)
    seconds = seconds or (1.0 if quick else 5.0)
    repeats = repeats or (5 if quick else 20)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = FeatureConfig()
    frames = cfg.num_frames(int(round(seconds * cfg.sample_rate)))
    shape = (1, 4, frames, cfg.n_mels)
    model = build(arch, num_classes=CLASSES, width=width).eval()
    meta = {"features": cfg.to_dict(), "clip_seconds": seconds, "labels": [f"class{i}" for i in range(CLASSES)],
            "task": "single-label", "arch": arch, "arch_kwargs": model.arch_kwargs}
    example = torch.zeros(shape)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ceiling_before = {"torch": dense_conv_ceiling(threads, repeats=10), "ort": ort_conv_ceiling(threads, repeats=10)}
    rows: list[dict[str, Any]] = []
    sessions = {}
    with tempfile.TemporaryDirectory(prefix="qedge-bench-macs-") as tmp:
        for ratio, round_to in configs(quick):
            t0 = time.perf_counter()
            m = model if ratio == 0 else prune(model, method, ratio, layers, example_input=example, round_to=round_to)
            prune_s = time.perf_counter() - t0
            prof = profile(m, shape)
            name = "dense" if ratio == 0 else f"p{ratio:g}" + (f"-r{round_to}" if round_to else "")
            info = model_info(m, meta, frames, lipschitz=False)
            path = export_onnx(m, info, Path(tmp) / f"{name}.onnx", dynamic_time=False)
            session = ort_session(path, threads)
            sessions[name] = (lambda s=session: s.run([OUTPUT_NAME], {INPUT_NAME: x}))
            rows.append({"name": name, "ratio": ratio, "round_to": round_to, "macs": int(prof.macs),
                         "params": int(prof.params), "prune_s": prune_s})
            print(f"{name:>10}: {prof.macs / 1e9:7.3f} GMACs {prof.params:>10,} params (pruned in {prune_s:.1f} s)",
                  flush=True)
        times = interleaved_ms(sessions, repeats=repeats, warmup=2)
    ceiling_after = {"torch": dense_conv_ceiling(threads, repeats=10), "ort": ort_conv_ceiling(threads, repeats=10)}
    # the ceiling is the best the machine showed in this run (load only ever slows it down)
    ceiling = {k: max(ceiling_before[k]["gmacs_per_s"], ceiling_after[k]["gmacs_per_s"]) for k in ("torch", "ort")}
    dense = next(r for r in rows if r["name"] == "dense")
    for r in rows:
        t = times[r["name"]]
        r["latency_ms"] = t["median_ms"]
        r["latency_p10_ms"], r["latency_p90_ms"] = t["p10_ms"], t["p90_ms"]
        r["gmacs_per_s"] = r["macs"] / 1e9 / (t["median_ms"] * 1e-3)
        r["fraction_of_ceiling"] = r["gmacs_per_s"] / ceiling["torch"]
        r["fraction_of_ort_ceiling"] = r["gmacs_per_s"] / ceiling["ort"]
        r["macs_ratio"] = r["macs"] / dense["macs"]
        r["latency_ratio"] = r["latency_ms"] / dense["latency_ms"]
        print(f"{r['name']:>10}: {r['latency_ms']:8.2f} ms  {r['gmacs_per_s']:6.1f} GMAC/s "
              f"({100 * r['fraction_of_ceiling']:.0f} % of ceiling)  MACs x{r['macs_ratio']:.2f} latency "
              f"x{r['latency_ratio']:.2f}", flush=True)
    fit = linear_fit([r["macs"] / 1e9 for r in rows], [r["latency_ms"] for r in rows])
    fit = {"a_ms_per_gmac": fit["a"], "b_ms": fit["b"], "r2": fit["r2"], "n": fit["n"],
           "marginal_gmacs_per_s": 1e3 / fit["a"] if fit["a"] > 0 else None}
    print(f"fit: latency = {fit['a_ms_per_gmac']:.2f} ms/GMAC · GMACs + {fit['b_ms']:.2f} ms (R² {fit['r2']:.3f}); "
          f"ceiling {ceiling['torch']:.1f} GMAC/s (PyTorch), {ceiling['ort']:.1f} (ORT)", flush=True)
    return {"quick": quick, "arch": arch, "width": width, "window_s": seconds, "frames": frames,
            "layers": layers, "method": method, "threads": threads, "repeats": repeats, "backend": "onnxruntime fp32",
            "ceiling_gmacs_per_s": ceiling["torch"], "ort_ceiling_gmacs_per_s": ceiling["ort"],
            "ceiling_runs": {"before": ceiling_before, "after": ceiling_after},
            "fit": fit, "rows": rows,
            "notes": "untrained weights; latency = median of interleaved ONNX Runtime batch-1 runs; "
                     "ceiling = max of the dense 3x3 128->128 conv throughput measured before and after"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="qcnn6 w0.25, 1 s, 3 variants (exercise, not judge)")
    parser.add_argument("--arch", default=None, help="quaternion model to prune (default qcnn14; quick qcnn6)")
    parser.add_argument("--width", type=float, default=None, help="width multiplier (default 0.5; quick 0.25)")
    parser.add_argument("--seconds", type=float, default=None, help="window in seconds (default 5; quick 1)")
    parser.add_argument("--layers", default="all", help="layers to prune: all | later | names (default all: "
                        "widest MAC range)")
    parser.add_argument("--method", default="l1", help="pruning criterion (latency does not depend on it)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime / PyTorch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 20; quick 5)")
    args = parser.parse_args()
    path = write_result("macs", run(args.quick, args.arch, args.width, args.seconds, args.layers, args.method,
                                    args.threads, args.repeats))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
