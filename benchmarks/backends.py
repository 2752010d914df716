"""Benchmark (b): one model, four ways to run it — PyTorch eager, ONNX Runtime fp32 and int8.

For each model size of the grid (untrained QCNN6/10/14 at widths 0.25/0.5/1.0, 1 s window, plus a
full-width QCNN14 at 5 s; latency does not depend on the weights' values), batch 1, in ONE process:

- ``eager_quaternion``: the model as trained — PyTorch eager, every quaternion layer assembling its
  real Hamilton kernel (design.md §3) on each call;
- ``eager_folded``: :func:`qedge.export.fold.fold` of it (plain ``Conv2d``/``Linear``, BN fused);
- ``ort_fp32``: the exported ONNX (:func:`qedge.export.onnx.export_onnx`) in ONNX Runtime (CPU);
- ``ort_int8``: its INT8 QDQ version (:func:`qedge.calib.quantize.quantize_int8`, calibrated on the
  features of real ESC-10 training clips picked by :func:`qedge.calib.select.select_calibration`).

The four are timed interleaved (one call of each per round, warm-up rounds excluded) on the same
real-clip input, so slow drifts of a shared machine hit them alike; figures are medians and every
comparison is a ratio within a row. PyTorch and ONNX Runtime use the same thread count.

    python -m benchmarks.backends [--quick] [--threads N[,M]]

With several thread counts each model is measured at each (rows carry ``threads``) and the result
says, per count, from which size (MACs) int8 is faster than fp32 for every larger model.

Writes ``<results>/backends-<machine>.json`` (see :func:`benchmarks.common.write_result`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import interleaved_ms, write_result

#: (arch, width, window seconds) of the full grid; quick runs the first only.
FULL = [(arch, width, 1.0) for arch in ("qcnn6", "qcnn10", "qcnn14") for width in (0.25, 0.5, 1.0)]
FULL.append(("qcnn14", 1.0, 5.0))
QUICK = [("qcnn6", 0.25, 1.0)]
CLASSES = 10  # ESC-10


def calibration_features(window_frames: int, n: int) -> np.ndarray:
    """Features ``(n, 4, window_frames, 64)`` of ``n`` real ESC-10 training clips (centred windows)."""
    from qedge.calib.reader import features_array
    from qedge.calib.select import select_calibration
    from qedge.runtime.features import FeatureConfig

    return features_array(select_calibration("esc10", n=n), FeatureConfig(), window_frames)


def measure_model(arch: str, width: float, seconds: float, threads: int, repeats: int, calib_n: int,
                  tmp: Path, features: dict[int, np.ndarray]) -> dict[str, Any]:
    """Time the four backends of one (arch, width, window) on a real clip's features."""
    import torch

    from qedge.calib.quantize import quantize_int8
    from qedge.calib.reader import FeatureReader
    from qedge.export.fold import fold
    from qedge.export.onnx import export_onnx, model_info, ort_session
    from qedge.models import build
    from qedge.runtime.features import FeatureConfig
    from qedge.runtime.model_info import INPUT_NAME, OUTPUT_NAME

    cfg = FeatureConfig()
    frames = cfg.num_frames(int(round(seconds * cfg.sample_rate)))
    if frames not in features:
        features[frames] = calibration_features(frames, calib_n)
    feats = features[frames]
    torch.manual_seed(0)
    model = build(arch, num_classes=CLASSES, width=width).eval()
    meta = {"features": cfg.to_dict(), "clip_seconds": seconds, "labels": [f"class{i}" for i in range(CLASSES)],
            "task": "single-label", "arch": arch, "arch_kwargs": model.arch_kwargs}
    info = model_info(model, meta, frames, lipschitz=False)
    stem = tmp / f"{arch}-w{width:g}-{seconds:g}s"
    t0 = time.perf_counter()
    fp32 = export_onnx(model, info, stem.with_suffix(".onnx"), dynamic_time=False)
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    int8 = quantize_int8(fp32, stem.with_suffix(".int8.onnx"), FeatureReader.from_arrays(feats))
    quantize_s = time.perf_counter() - t0
    folded = fold(model).eval()
    s32, s8 = ort_session(fp32, threads), ort_session(int8, threads)
    x_np = np.ascontiguousarray(feats[:1])
    x = torch.from_numpy(x_np)

    def eager(m: torch.nn.Module):
        def call() -> None:
            with torch.inference_mode():
                m(x)
        return call

    ways = {
        "eager_quaternion": eager(model),
        "eager_folded": eager(folded),
        "ort_fp32": lambda: s32.run([OUTPUT_NAME], {INPUT_NAME: x_np}),
        "ort_int8": lambda: s8.run([OUTPUT_NAME], {INPUT_NAME: x_np}),
    }
    times = interleaved_ms(ways, repeats=repeats, warmup=2)
    row: dict[str, Any] = {"arch": arch, "width": width, "window_s": seconds, "frames": frames,
                           "macs": info.macs, "params": info.params,
                           "fp32_bytes": fp32.stat().st_size, "int8_bytes": int8.stat().st_size,
                           "export_s": export_s, "quantize_s": quantize_s}
    for name, t in times.items():
        row[f"{name}_ms"] = t["median_ms"]
        row[f"{name}_p90_ms"] = t["p90_ms"]
        row[f"{name}_gmacs_per_s"] = info.macs / 1e9 / (t["median_ms"] * 1e-3)
    row["runs"] = times["ort_fp32"]["runs"]
    # ratios > 1 mean the second-named way is faster
    row["quaternion_over_folded"] = row["eager_quaternion_ms"] / row["eager_folded_ms"]
    row["eager_folded_over_ort_fp32"] = row["eager_folded_ms"] / row["ort_fp32_ms"]
    row["ort_fp32_over_int8"] = row["ort_fp32_ms"] / row["ort_int8_ms"]
    row["eager_quaternion_over_ort_int8"] = row["eager_quaternion_ms"] / row["ort_int8_ms"]
    print(f"{arch:>7} w{width:<4g} {seconds:g}s {info.macs / 1e9:7.3f} GMACs | eager q {row['eager_quaternion_ms']:8.2f} "
          f"folded {row['eager_folded_ms']:8.2f} | ORT fp32 {row['ort_fp32_ms']:8.2f} int8 {row['ort_int8_ms']:8.2f} ms"
          f" | q/folded x{row['quaternion_over_folded']:.2f} fp32/int8 x{row['ort_fp32_over_int8']:.2f}", flush=True)
    return row


def int8_wins_from(rows: list[dict[str, Any]]) -> int | None:
    """The smallest MACs from which ONNX Runtime int8 is faster than fp32 for every model at least
    that large (``ort_fp32_over_int8 > 1``); None when the largest model is not faster in int8."""
    ordered = sorted(rows, key=lambda r: r["macs"])
    start = None
    for r in ordered:
        if r["ort_fp32_over_int8"] > 1.0:
            start = r["macs"] if start is None else start
        else:
            start = None
    return start


def run(quick: bool = False, threads: int | list[int] | None = None) -> dict[str, Any]:
    """Measure every model of the grid (``QUICK`` or ``FULL``) at each thread count; returns the
    result dictionary (rows carry their ``threads``; ``int8_wins_from_macs`` per thread count)."""
    import torch

    counts = [int(t) for t in (threads if isinstance(threads, list) else [threads or 1])]
    grid = QUICK if quick else FULL
    repeats = 5 if quick else 15
    calib_n = 2 if quick else 8
    rows = []
    features: dict[int, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="qedge-bench-backends-") as tmp:
        for count in counts:
            torch.set_num_threads(count)
            for arch, width, seconds in grid:
                # big models: fewer rounds (a 10 GMAC model runs ~0.3-1 s per call here)
                reps = repeats if arch != "qcnn14" or width < 1.0 or seconds <= 1.0 else max(3, repeats // 2)
                row = measure_model(arch, width, seconds, count, reps, calib_n, Path(tmp), features)
                rows.append({"threads": count, **row})
    import onnxruntime

    wins = {str(c): int8_wins_from([r for r in rows if r["threads"] == c]) for c in counts}
    return {"quick": quick, "threads": counts if len(counts) > 1 else counts[0], "int8_wins_from_macs": wins,
            "batch": 1, "classes": CLASSES, "calibration_clips": calib_n,
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "notes": "untrained weights (latency only); int8 = QDQ symmetric per-channel, first conv fp32 "
                     "(quantize_int8 default), calibrated on real ESC-10 training clips; interleaved medians",
            "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small model, few repeats (exercise, not judge)")
    parser.add_argument("--threads", default=None, help="PyTorch and ONNX Runtime intra-op threads, comma-separated "
                        "for several (e.g. 1,2; default 1: on a shared machine more threads measure contention)")
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")] if args.threads else [1]
    result = run(args.quick, counts)
    for count, macs in result["int8_wins_from_macs"].items():
        print(f"{count} thread(s): int8 faster than fp32 "
              + (f"from {macs / 1e9:.3f} GMACs up" if macs is not None else "not at the largest size"))
    path = write_result("backends", result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
