"""Helpers shared by the benchmark scripts: machine naming, robust timing, result files.

Every figure the suite reports is a median over repeated runs with warm-up excluded, and every
comparison is a ratio of two figures measured in the same run on the same machine.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

RESULTS = Path(__file__).resolve().parent / "results"
#: Environment variable that redirects every result file (the runner's ``--quick`` and the tests use it).
RESULTS_ENV = "QEDGE_BENCH_RESULTS"


def results_dir() -> Path:
    """Where result files go: ``$QEDGE_BENCH_RESULTS`` when set, else ``benchmarks/results``."""
    override = os.environ.get(RESULTS_ENV)
    return Path(override).expanduser().resolve() if override else RESULTS


def machine() -> dict[str, Any]:
    """Describe this machine: CPU model, core count, and a short slug used in file names."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = os.cpu_count() or 1
    slug = os.environ.get("QEDGE_MACHINE") or re.sub(r"[^a-z0-9]+", "-", f"{cpu} {cores}core".lower()).strip("-")
    return {"slug": slug, "cpu": cpu, "cores": cores, "arch": platform.machine(), "python": platform.python_version()}


def time_ms(fn: Callable[[], Any], repeats: int = 20, warmup: int = 3, min_seconds: float = 0.0) -> dict[str, float]:
    """Median / p10 / p90 wall time of ``fn()`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    samples.sort()
    return {
        "median_ms": statistics.median(samples),
        "p10_ms": samples[int(0.1 * (len(samples) - 1))],
        "p90_ms": samples[int(0.9 * (len(samples) - 1))],
        "runs": len(samples),
    }


def interleaved_ms(fns: dict[str, Callable[[], Any]], repeats: int = 20, warmup: int = 2) -> dict[str, dict[str, float]]:
    """Time several callables round-robin: each round calls every one once (order rotated).

    On a shared machine load drifts; interleaving makes the drift hit every competitor alike, so
    the ratios of the medians are fair. ``warmup`` untimed rounds first. Returns, per name, what
    :func:`time_ms` returns (median / p10 / p90 ms, runs).
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(max(1, repeats)):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            fns[name]()
            samples[name].append((time.perf_counter() - t0) * 1e3)
    out = {}
    for name, s in samples.items():
        s.sort()
        out[name] = {"median_ms": statistics.median(s), "p10_ms": s[int(0.1 * (len(s) - 1))],
                     "p90_ms": s[int(0.9 * (len(s) - 1))], "runs": len(s)}
    return out


def write_result(name: str, data: dict[str, Any]) -> Path:
    """Write ``<results>/<name>-<machine>.json`` (with the machine description) and return it.

    ``<results>`` is :func:`results_dir` (``benchmarks/results`` unless ``$QEDGE_BENCH_RESULTS``).
    """
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    payload = {"benchmark": name, "machine": info, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **data}
    path = out / f"{name}-{info['slug']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    tmp.replace(path)
    return path


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend: benchmarks write PNGs and never open a window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 120) -> Path:
    """Lay out ``fig``, write it to ``path`` and close it; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return Path(path)


def cached_json(path: Path, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The JSON at ``path``, or ``make()`` written there atomically (a study's per-run cache, so an
    interrupted study continues where it stopped)."""
    if path.exists():
        return json.loads(path.read_text())
    row = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(row, indent=1))
    tmp.replace(path)
    return row


def publish_study(name: str, result: dict[str, Any], plot: Callable[[dict[str, Any], Path], Any],
                  markdown: Callable[[dict[str, Any]], str]) -> dict[str, Path]:
    """Write a study's ``<name>-<machine>.json`` (:func:`write_result`), its plot ``.png`` (the
    result names it under ``png``) and its ``.md``; print the Markdown. ``result`` gains
    ``png`` and ``machine``. Returns the three paths."""
    info = machine()
    result["png"] = f"{name}-{info['slug']}.png"
    paths = {"json": write_result(name, result)}
    result["machine"] = info
    paths["png"] = results_dir() / result["png"]
    plot(result, paths["png"])
    paths["md"] = results_dir() / f"{name}-{info['slug']}.md"
    text = markdown(result)
    paths["md"].write_text(text)
    print(text)
    print("wrote " + ", ".join(str(v) for v in paths.values()))
    return paths


#: (channels, frames, mels) of the dense 3×3 convolutions (C→C, padding 1, batch 1) whose best
#: throughput is taken as the machine's ceiling: the shape classes QCNN blocks 2–5 run.
CEILING_SHAPES = ((64, 200, 32), (128, 100, 32), (256, 50, 16))


def _ceiling(time_one: Callable[[int, int, int], float]) -> dict[str, Any]:
    shapes = []
    for c, t, m in CEILING_SHAPES:
        ms = time_one(c, t, m)
        macs = c * c * 9 * t * m
        shapes.append({"shape": f"{c}->{c} 3x3 @ {t}x{m}", "median_ms": ms, "gmacs_per_s": macs / (ms * 1e-3) / 1e9})
    best = max(shapes, key=lambda s: s["gmacs_per_s"])
    return {"gmacs_per_s": best["gmacs_per_s"], "best_shape": best["shape"], "shapes": shapes}


def dense_conv_ceiling(threads: int | None = None, repeats: int = 10) -> dict[str, Any]:
    """Measure this machine's dense fp32 convolution throughput (GMAC/s) with PyTorch.

    Dense 3×3 convolutions C→C (C = 64, 128, 256) on the map sizes QCNN blocks see (batch 1):
    compute bound, the shape class QCNN blocks run. The best of them is the ceiling that achieved
    GMAC/s is compared against (``gmacs_per_s``; per shape in ``shapes``).
    """
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)

    def one(c: int, t: int, m: int) -> float:
        conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).eval()
        x = torch.randn(1, c, t, m)
        with torch.no_grad():
            return time_ms(lambda: conv(x), repeats=repeats, warmup=3)["median_ms"]

    try:
        out = _ceiling(one)
    finally:
        torch.set_num_threads(old)
    return {**out, "threads": threads or old, "backend": "pytorch"}


def ort_conv_ceiling(threads: int | None = None, repeats: int = 10) -> dict[str, Any]:
    """The same dense 3×3 convolutions as :func:`dense_conv_ceiling`, run by ONNX Runtime (GMAC/s).

    One-node ONNX graphs (Conv, pad 1) built with ``onnx.helper``, so latencies measured with ONNX
    Runtime can be compared with ONNX Runtime's own ceiling.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1

    def one(c: int, t: int, m: int) -> float:
        w = np.random.default_rng(0).standard_normal((c, c, 3, 3)).astype(np.float32) * 0.03
        graph = helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])], "ceiling",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, t, m])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, t, m])],
            [numpy_helper.from_array(w, "w")])
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        onnx.checker.check_model(proto)
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(1).standard_normal((1, c, t, m)).astype(np.float32)
        return time_ms(lambda: session.run(["y"], {"x": x}), repeats=repeats, warmup=3)["median_ms"]

    return {**_ceiling(one), "threads": threads or 0, "backend": "onnxruntime"}


def linear_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Least-squares line y ≈ a·x + b with R² = 1 − SS_res / SS_tot (R² = 0 when y is constant).

    For a least-squares line with an intercept R² lies in [0, 1] (up to rounding).
    """
    import numpy as np

    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if len(xs) < 2 or np.ptp(xs) == 0:
        raise ValueError("a line needs at least two distinct x values")
    a, b = np.polyfit(xs, ys, 1)
    ss_res = float(np.sum((ys - (a * xs + b)) ** 2))
    ss_tot = float(np.sum((ys - ys.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0
    return {"a": float(a), "b": float(b), "r2": float(r2), "n": int(len(xs))}
