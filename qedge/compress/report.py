"""Compression grid reports: Markdown + JSON + PNG (design.md §6).

One row per run (the unpruned baseline, each pruned/fine-tuned model, the KD-only student):
parameters, MACs (:func:`qedge.profile.profile`), the task metric (accuracy or mAP) before and
after fine-tuning, the measured CPU latency of the deployed (folded) model, fine-tuning wall time,
whether KD was used, and the ``--round-to`` setting. Plots: metric vs MACs and latency vs MACs.

Latency (:func:`measure_latency`): the folded model exported to ONNX
(:func:`qedge.export.onnx.export_onnx`) and timed with ONNX Runtime at batch 1, median of ≥ 20
runs (:func:`qedge.export.onnx.ort_latency_ms`). When the export tools are unavailable it falls
back to plain PyTorch fp32 on the folded model, and the row's ``latency_backend`` says so.
Latencies are only comparable within one report (same machine, same run).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from qedge.errors import QedgeError

__all__ = ["measure_latency", "write_report", "ORT_BACKEND"]

ORT_BACKEND = "onnxruntime fp32 (folded, batch 1)"


def measure_latency(model: Any, meta: Mapping[str, Any], window_frames: int, repeats: int = 20,
                    threads: int | None = None) -> tuple[float, str]:
    """Median batch-1 latency (ms) of the deployed form of ``model`` at ``window_frames`` frames:
    ONNX Runtime on the exported folded model. Returns ``(milliseconds, backend label)``."""
    from qedge.export.onnx import export_onnx, model_info, ort_latency_ms

    repeats = max(20, int(repeats))
    with tempfile.TemporaryDirectory(prefix="qedge-latency-") as tmp:
        info = model_info(model, meta, window_frames, lipschitz=False)
        path = export_onnx(model, info, Path(tmp) / "model.onnx", dynamic_time=False)
        return float(ort_latency_ms(path, repeats=repeats, threads=threads)), ORT_BACKEND


def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _table(runs: Sequence[Mapping[str, Any]], metric: str) -> list[str]:
    lines = [
        f"| run | method | ratio | round-to | KD | params | GMACs | {metric} before FT | {metric} | "
        "latency ms | fine-tune s |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r.get('name', '')} | {r.get('method') or '—'} | {_fmt(r.get('ratio'), '.2f')} | "
            f"{r.get('round_to') or '—'} | {'yes' if r.get('kd') else 'no'} | {int(r['params']):,} | "
            f"{r['macs'] / 1e9:.4f} | {_fmt(r.get('metric_before'), '.4f')} | {_fmt(r.get('metric'), '.4f')} | "
            f"{_fmt(r.get('latency_ms'), '.2f')} | {_fmt(r.get('finetune_seconds'), '.1f')} |")
    return lines


def _round_to_section(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Pairs of runs that differ only in ``round_to``: what rounding widths does to latency."""
    base = {(r.get("method"), r.get("ratio"), bool(r.get("kd"))): r for r in runs
            if r.get("method") and not r.get("round_to")}
    lines = []
    for r in runs:
        if not r.get("round_to"):
            continue
        ref = base.get((r.get("method"), r.get("ratio"), bool(r.get("kd"))))
        if ref is None or not ref.get("latency_ms") or not r.get("latency_ms"):
            continue
        lines.append(
            f"- {r['name']}: round-to {r['round_to']} → {r['macs'] / 1e9:.4f} GMACs, "
            f"{r['latency_ms']:.2f} ms vs {ref['macs'] / 1e9:.4f} GMACs, {ref['latency_ms']:.2f} ms "
            f"without rounding (latency ×{r['latency_ms'] / ref['latency_ms']:.3f}, "
            f"MACs ×{r['macs'] / ref['macs']:.3f})")
    return lines


def _plot(runs: Sequence[Mapping[str, Any]], metric: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "metric", metric), (axes[1], "latency_ms", "latency (ms)")):
        for r in runs:
            if r.get(key) is None:
                continue
            marker = "*" if not r.get("method") and not r.get("student") else ("s" if r.get("student") else "o")
            face = "none" if r.get("kd") and not r.get("student") else None
            ax.scatter(r["macs"] / 1e9, r[key], marker=marker, s=70 if marker == "*" else 40,
                       facecolors=face, edgecolors="C0" if face else None)
            ax.annotate(r.get("name", ""), (r["macs"] / 1e9, r[key]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("GMACs per window")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_title(f"{metric} vs MACs")
    axes[1].set_title("latency vs MACs")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(runs: Sequence[Mapping[str, Any]], out_dir: str | Path, *, metric: str = "accuracy",
                 title: str = "qedge compress", notes: Sequence[str] = ()) -> dict[str, Path]:
    """Write ``report.md``, ``report.json`` and ``report.png`` into ``out_dir``; return their paths.

    Each run needs ``name``, ``params`` and ``macs``; optional: ``method``, ``ratio``, ``round_to``,
    ``kd``, ``student`` (KD-only baseline), ``metric_before``, ``metric``, ``latency_ms``,
    ``latency_backend``, ``finetune_seconds``.
    """
    if not runs:
        raise QedgeError("nothing to report: no runs")
    for r in runs:
        missing = [k for k in ("name", "params", "macs") if r.get(k) is None]
        if missing:
            raise QedgeError(f"report row {r.get('name', '?')} lacks {', '.join(missing)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    backends = sorted({str(r["latency_backend"]) for r in runs if r.get("latency_backend")})
    lines = [f"# {title}", ""]
    lines += _table(runs, metric)
    lines += ["", f"Latency: {', '.join(backends) or 'not measured'}; median of ≥ 20 runs, measured in "
              "this run on this machine (compare rows, not machines)."]
    rounding = _round_to_section(runs)
    if rounding:
        lines += ["", "## --round-to and latency", "", *rounding]
    if notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    paths = {"md": out / "report.md", "json": out / "report.json", "png": out / "report.png"}
    paths["md"].write_text("\n".join(lines) + "\n")
    paths["json"].write_text(json.dumps({"title": title, "metric": metric, "notes": list(notes),
                                         "runs": [dict(r) for r in runs]}, indent=2, default=str) + "\n")
    _plot(runs, metric, paths["png"], title)
    return paths
