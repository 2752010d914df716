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
from typing import Any, Callable

RESULTS = Path(__file__).resolve().parent / "results"


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


def write_result(name: str, data: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>-<machine>.json`` (with the machine description) and return it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine()
    payload = {"benchmark": name, "machine": info, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **data}
    path = RESULTS / f"{name}-{info['slug']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    tmp.replace(path)
    return path


def dense_conv_ceiling(threads: int | None = None, repeats: int = 10) -> dict[str, float]:
    """Measure this machine's dense fp32 convolution throughput (GMAC/s) with PyTorch.

    A 3×3 convolution 128→128 channels on a 100×32 map (batch 1): large enough to be compute bound,
    the shape class QCNN blocks run. Used as the ceiling that achieved GMAC/s is compared against.
    """
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        conv = torch.nn.Conv2d(128, 128, 3, padding=1, bias=False).eval()
        x = torch.randn(1, 128, 100, 32)
        macs = 128 * 128 * 9 * 100 * 32
        with torch.no_grad():
            t = time_ms(lambda: conv(x), repeats=repeats, warmup=3)
    finally:
        torch.set_num_threads(old)
    return {"gmacs_per_s": macs / (t["median_ms"] * 1e-3) / 1e9, "threads": threads or old, "median_ms": t["median_ms"]}
