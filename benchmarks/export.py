"""Benchmark (export): what the deployment files cost and what they lose.

For one model file (a ``qedge train`` / ``qedge compress`` output), in one run on this machine:

- fp32 ONNX (folded) vs compact ONNX (quaternion kernels stored once, export/compact.py): file
  sizes, max relative output difference, ORT batch-1 latency (1 thread and default threads);
- INT8 QDQ variants (calib/): MinMax and Percentile calibration, with and without the first
  convolution kept in fp32: held-out accuracy (ORT sessions on the runtime's features), top-1
  agreement with fp32, batch-1 latency, file size.

    python -m benchmarks.export --model digits.qedge [--data fsdd] [--calib-size 64] [--eval-limit N]

Writes ``benchmarks/results/export-<machine>.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import write_result
from qedge.calib.quantize import quantize_int8
from qedge.calib.reader import FeatureReader
from qedge.calib.select import select_calibration
from qedge.checkpoint import load
from qedge.export.compact import compact_onnx
from qedge.export.onnx import export_onnx, model_info, ort_latency_ms, verify_onnx
from qedge.export.pipeline import held_out_features, evaluate_onnx, model_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--data", default=None, help="dataset (default: the model's)")
    parser.add_argument("--calib-size", type=int, default=64)
    parser.add_argument("--eval-limit", type=int, default=None, help="stratified subset of the held-out split")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    model, meta = load(args.model)
    data = args.data or model_data(meta)
    if not data:
        parser.error("the model names no data: pass --data")
    info = model_info(model, meta, lipschitz=False)
    warnings: list[str] = []
    x_test, targets = held_out_features(data, info, args.eval_limit, warnings)
    result: dict = {"model": str(args.model), "arch": meta["arch"], "arch_kwargs": meta["arch_kwargs"],
                    "data": data, "eval_clips": int(len(x_test)), "macs": info.macs, "params": info.params,
                    "window_frames": info.window_frames, "warnings": warnings}

    def latency(path: Path) -> dict:
        return {"1_thread_ms": ort_latency_ms(path, args.repeats, 5, threads=1),
                "default_threads_ms": ort_latency_ms(path, args.repeats, 5)}

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, info, Path(tmp) / "model.onnx", dynamic_time=False)
        verify = verify_onnx(fp32, model, x_test[:32])
        ref = evaluate_onnx(fp32, x_test, targets)
        result["fp32"] = {"bytes": fp32.stat().st_size, "accuracy": ref["accuracy"], "verify": verify,
                          "latency": latency(fp32)}
        compact, report = compact_onnx(fp32, Path(tmp) / "model.compact.onnx")
        packed = evaluate_onnx(compact, x_test, targets)
        result["compact"] = {
            "bytes": compact.stat().st_size, "ratio": fp32.stat().st_size / compact.stat().st_size,
            "floats_before": report.floats_before, "floats_after": report.floats_after,
            "rel_diff": float(np.abs(packed["scores"] - ref["scores"]).max() / np.abs(ref["scores"]).max()),
            "latency": latency(compact),
        }
        clips = select_calibration(data, args.calib_size)
        reader = FeatureReader(clips, info.features, info.window_frames)
        result["int8"] = []
        for method in ("minmax", "percentile"):
            for first in (False, True):
                path = Path(tmp) / f"model.{method}.{int(first)}.int8.onnx"
                reader.rewind()
                quantize_int8(fp32, path, reader, method=method, first_conv_fp32=first)
                q = evaluate_onnx(path, x_test, targets)
                result["int8"].append({
                    "method": method, "first_conv_fp32": first, "bytes": path.stat().st_size,
                    "accuracy": q["accuracy"], "top1_agreement": float((q["pred"] == ref["pred"]).mean()),
                    "max_abs_diff": float(np.abs(q["scores"] - ref["scores"]).max()),
                    "latency": latency(path),
                })
    out = write_result("export", result)
    print(_markdown(result))
    print(f"\nwritten {out}")


def _markdown(r: dict) -> str:
    acc = lambda v: "–" if v is None else f"{100 * v:.1f} %"  # noqa: E731
    lines = [f"model {r['arch']} {r['arch_kwargs']} on {r['data']} ({r['eval_clips']} held-out clips), "
             f"{r['params']:,} params, {r['macs'] / 1e6:.1f} MMACs/window", "",
             "| file | size | accuracy | top-1 vs fp32 | ORT 1 thread | ORT default |", "|---|---|---|---|---|---|"]
    f = r["fp32"]
    lines.append(f"| fp32 (folded) | {f['bytes'] / 1e6:.2f} MB | {acc(f['accuracy'])} | – | "
                 f"{f['latency']['1_thread_ms']:.2f} ms | {f['latency']['default_threads_ms']:.2f} ms |")
    c = r["compact"]
    lines.append(f"| compact (÷{c['ratio']:.2f}, rel Δ {c['rel_diff']:.1e}) | {c['bytes'] / 1e6:.2f} MB | = | 100 % | "
                 f"{c['latency']['1_thread_ms']:.2f} ms | {c['latency']['default_threads_ms']:.2f} ms |")
    for q in r["int8"]:
        name = f"int8 {q['method']}" + (" + fp32 first conv" if q["first_conv_fp32"] else "")
        lines.append(f"| {name} | {q['bytes'] / 1e6:.2f} MB | {acc(q['accuracy'])} | {100 * q['top1_agreement']:.1f} % | "
                     f"{q['latency']['1_thread_ms']:.2f} ms | {q['latency']['default_threads_ms']:.2f} ms |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
