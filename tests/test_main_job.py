"""The main job's choice of deployed precision: int8 only when its measured listen run is
clearly (more than the run-to-run noise) faster than fp32's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _main_job():
    spec = importlib.util.spec_from_file_location("main_job", REPO / "scripts" / "main_job.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(p50: float) -> dict:
    return {"summary": {"latency_ms": {"inference": {"p50": p50, "p95": 2 * p50}}}}


def test_the_job_deploys_the_precision_with_the_lower_median_inference_time():
    job = _main_job()
    assert job.faster_precision({"fp32": _run(2.0), "int8": _run(1.2)}) == ("int8", {"fp32": 2.0, "int8": 1.2})
    assert job.faster_precision({"fp32": _run(1.0), "int8": _run(1.3)})[0] == "fp32"
    assert job.faster_precision({"int8": _run(1.0), "fp32": _run(1.0)})[0] == "fp32"  # a tie keeps full precision
    # a gap inside the run-to-run noise (INT8_MARGIN) is no reason to quantise
    assert job.faster_precision({"fp32": _run(0.86), "int8": _run(0.83)})[0] == "fp32"
    assert job.faster_precision({"fp32": _run(1.0), "int8": _run(0.94)})[0] == "int8"
