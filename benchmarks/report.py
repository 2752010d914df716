"""The aggregate benchmark report of one machine, built from the per-section result files.

Each section (``python -m benchmarks.<name>``) writes its own ``<name>-<machine>.json`` (section g:
``compress/report.json``) into the results folder. :func:`aggregate` reads EVERY such file present,
whether or not it was re-run this time, and writes

- ``<machine>.json``: machine facts and package versions, the few headline ratios
  (:func:`headlines`), and per section its status this run, when it was measured and its result;
- ``<machine>.md``: the same as Markdown, one table per section (the ``md_*`` renderers in
  :data:`MARKDOWN`), sections not re-run marked with their own timestamp;
- ``<machine>-{macs,backends,qconv}.png``: plots (matplotlib, Agg backend) for those sections.

The runner (``benchmarks/__main__.py``) calls :func:`aggregate` after the sections run, or alone
with ``--aggregate-only``; it passes its list of sections, so this module does not import the runner.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from benchmarks.common import machine

if TYPE_CHECKING:
    from benchmarks.__main__ import Section


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect(out: Path, slug: str, sections: Sequence[Section]) -> dict[str, dict[str, Any]]:
    """Every result of ``sections`` present in ``out`` for machine ``slug``: ``{name: data}``."""
    found: dict[str, dict[str, Any]] = {}
    for s in sections:
        if s.name == "compress":
            data = _load(out / "compress" / "report.json")
            if data is not None:
                stamp = (out / "compress" / "report.json").stat().st_mtime
                data = {"benchmark": "compress", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp)),
                        **data}
        else:
            data = _load(out / f"{s.name}-{slug}.json")
        if data is not None:
            found[s.name] = data
    return found


def _median(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else None


def headlines(data: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The few numbers worth quoting, each a ratio (or a fit) measured within one section's run."""
    h: dict[str, Any] = {}
    if "qconv" in data:
        rows = data["qconv"]["rows"]
        for phase in ("infer", "train"):
            h[f"qconv_{phase}_naive16_over_assembled_median"] = _median([r[f"{phase}_naive16_over_assembled"] for r in rows])
            h[f"qconv_{phase}_assembled_over_real_median"] = _median([r[f"{phase}_assembled_over_real"] for r in rows])
    if "backends" in data:
        rows = data["backends"]["rows"]
        h["backends_quaternion_over_folded_median"] = _median([r["quaternion_over_folded"] for r in rows])
        h["backends_eager_folded_over_ort_fp32_median"] = _median([r["eager_folded_over_ort_fp32"] for r in rows])
        h["backends_ort_fp32_over_int8_median"] = _median([r["ort_fp32_over_int8"] for r in rows])
        biggest = max(rows, key=lambda r: r["macs"])
        h["backends_largest"] = {k: biggest[k] for k in ("arch", "width", "window_s", "macs", "eager_quaternion_ms",
                                                          "eager_folded_ms", "ort_fp32_ms", "ort_int8_ms")}
    if "macs" in data:
        m = data["macs"]
        h["macs_fit"] = m["fit"]
        h["macs_ceiling_gmacs_per_s"] = m["ceiling_gmacs_per_s"]
        h["macs_ort_ceiling_gmacs_per_s"] = m["ort_ceiling_gmacs_per_s"]
        h["macs_fraction_of_ceiling_range"] = [min(r["fraction_of_ceiling"] for r in m["rows"]),
                                               max(r["fraction_of_ceiling"] for r in m["rows"])]
    if "listen" in data:
        rows = data["listen"].get("rows", [])
        if rows:
            h["listen_max_rtf"] = max(r["real_time_factor"] for r in rows)
            h["listen_max_end_to_end_p99_ms"] = max(r["end_to_end_ms"]["p99"] for r in rows)
    if "features" in data:
        f = data["features"]
        h["features_offline_rtf"] = f.get("offline", {}).get("rtf")
        h["features_streaming_rtf"] = f.get("streaming", {}).get("rtf")
    if "spectral" in data:
        rows = data["spectral"].get("single_layer", [])
        if rows:
            h["spectral_fft_speedup_max"] = max(r["speedup_fft"] for r in rows)
    return h


def _f(v: Any, spec: str = ".2f") -> str:
    if v is None:
        return "—"
    if isinstance(v, (int, float)):
        return format(v, spec)
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(str(c) for c in row) + " |" for row in rows]]


def md_qconv(d: dict[str, Any]) -> list[str]:
    rows = [[r["layer"], _f(r["infer_assembled_ms"]), _f(r["infer_naive16_ms"]), _f(r["infer_real_ms"]),
             f"×{_f(r['infer_naive16_over_assembled'])}", f"×{_f(r['infer_assembled_over_real'])}",
             _f(r["train_assembled_ms"], ".1f"), _f(r["train_naive16_ms"], ".1f"), _f(r["train_real_ms"], ".1f"),
             f"×{_f(r['train_naive16_over_assembled'])}", f"×{_f(r['train_assembled_over_real'])}"] for r in d["rows"]]
    return [f"PyTorch {d.get('threads', '?')} thread(s). Inference batch 1 (no grad); training step = forward + "
            "backward, batch 8. Ratios > 1: the first-named way is slower.", "",
            *_table(["layer (real ch.)", "infer assembled ms", "infer naive16 ms", "infer real ms",
                     "naive16/assembled", "assembled/real", "train assembled ms", "train naive16 ms",
                     "train real ms", "naive16/assembled", "assembled/real"], rows)]


def md_backends(d: dict[str, Any]) -> list[str]:
    rows = [[r["arch"], _f(r["width"], "g"), f"{r['window_s']:g} s", r.get("threads", d.get("threads", "?")),
             _f(r["macs"] / 1e9, ".3f"), f"{r['params']:,}",
             _f(r["eager_quaternion_ms"]), _f(r["eager_folded_ms"]), _f(r["ort_fp32_ms"]), _f(r["ort_int8_ms"]),
             f"×{_f(r['quaternion_over_folded'])}", f"×{_f(r['eager_folded_over_ort_fp32'])}",
             f"×{_f(r['ort_fp32_over_int8'])}", _f(r["ort_fp32_gmacs_per_s"], ".1f")] for r in d["rows"]]
    threads = d.get("threads", "?")
    threads = ", ".join(map(str, threads)) if isinstance(threads, list) else threads
    out = [f"Batch 1, {threads} thread(s) for PyTorch and ONNX Runtime "
           f"(torch {d.get('torch', '?')}, onnxruntime {d.get('onnxruntime', '?')}); {d.get('notes', '')}. "
           "Ratios are speed-ups of the second-named way.", "",
           *_table(["model", "width", "window", "threads", "GMACs", "params", "eager quaternion ms",
                    "eager folded ms", "ORT fp32 ms", "ORT int8 ms", "quaternion/folded", "folded/ORT fp32",
                    "ORT fp32/int8", "ORT fp32 GMAC/s"], rows)]
    for count, macs in (d.get("int8_wins_from_macs") or {}).items():
        out.append(f"- {count} thread(s): int8 is faster than fp32 "
                   + (f"for every model from {macs / 1e9:.3f} GMACs up" if macs is not None
                      else "not even for the largest model"))
    return out


def md_macs(d: dict[str, Any]) -> list[str]:
    fit = d["fit"]
    rows = [[r["name"], _f(r["ratio"], "g"), _f(r["round_to"], "d"), _f(r["macs"] / 1e9, ".3f"), f"{r['params']:,}",
             _f(r["latency_ms"]), _f(r["gmacs_per_s"], ".1f"), f"{100 * r['fraction_of_ceiling']:.0f} %",
             _f(r["macs_ratio"]), _f(r["latency_ratio"])] for r in d["rows"]]
    return [f"{d['arch']} width {d['width']:g}, {d['window_s']:g} s window ({d['frames']} frames), pruned "
            f"'{d['layers']}' layers by {d['method']}; {d['backend']}, batch 1, {d['threads']} thread(s), "
            f"medians of {d['repeats']} interleaved rounds.", "",
            f"- Fit: latency = {fit['a_ms_per_gmac']:.2f} ms/GMAC · GMACs + {fit['b_ms']:.2f} ms, "
            f"R² = {fit['r2']:.3f} (n = {fit['n']}); marginal throughput {_f(fit.get('marginal_gmacs_per_s'), '.1f')} GMAC/s.",
            f"- Dense 3×3 conv ceiling measured in this run: {d['ceiling_gmacs_per_s']:.1f} GMAC/s (PyTorch), "
            f"{d['ort_ceiling_gmacs_per_s']:.1f} GMAC/s (ONNX Runtime).", "",
            *_table(["variant", "ratio", "round_to", "GMACs", "params", "latency ms", "GMAC/s", "of ceiling",
                     "MACs ratio", "latency ratio"], rows)]


def md_listen(d: dict[str, Any]) -> list[str]:
    rows = [[r["model"], r["precision"], _f(r["macs_per_window"] / 1e9, ".3f"), _f(r["inference_ms"]["p50"]),
             _f(r["inference_ms"]["p99"]), _f(r["end_to_end_ms"]["p50"]), _f(r["end_to_end_ms"]["p99"]),
             _f(r["features_ms"]["p50"]), _f(r["real_time_factor"], ".4f"), _f(r["gmacs_per_s"], ".1f"),
             _f(r["dropped_audio_s"], ".2f")] for r in d.get("rows", [])]
    out = [f"ONNX Runtime {d.get('threads', '?')} thread(s), {d.get('audio_seconds', '?')} s of real ESC-10 audio per "
           "model, paced in real time.", "",
           *_table(["model", "precision", "GMACs/window", "infer p50 ms", "infer p99 ms", "end-to-end p50 ms",
                    "end-to-end p99 ms", "features p50 ms", "RTF", "GMAC/s", "dropped s"], rows)]
    for prec, fit in (d.get("latency_vs_macs") or {}).items():
        if fit:
            out.append(f"- {prec}: inference ≈ {fit['intercept_ms']:.2f} ms + {fit['ms_per_gmac']:.2f} ms/GMAC")
    return out


def md_features(d: dict[str, Any]) -> list[str]:
    off, st, dec = d.get("offline", {}), d.get("streaming", {}), d.get("decode", {})
    rows = [["offline compute (whole clip)", _f(off.get("median_ms")) + " ms", _f(off.get("rtf"), ".4f")],
            ["streaming, one 10 ms hop", _f(st.get("median_us_per_hop"), ".1f") + " µs (p99 "
             + _f(st.get("p99_us_per_hop"), ".1f") + ")", _f(st.get("rtf"), ".4f")],
            ["decode + resample", _f(dec.get("median_ms")) + " ms", _f(dec.get("rtf"), ".4f")]]
    return [f"Clip {d.get('clip')} ({_f(d.get('clip_seconds'), '.2f')} s), {d.get('threads', '?')} thread; "
            "RTF = compute time / audio time.", "", *_table(["what", "median", "RTF"], rows)]


def md_spectral(d: dict[str, Any]) -> list[str]:
    rows = [[r["N"], r["quaternion_channels"], _f(r["brute_svd_ms"], ".1f"), _f(r["fft_ms"], ".3f"),
             _f(r["qft_ms"], ".3f"), f"×{_f(r['speedup_fft'], '.0f')}", f"×{_f(r['speedup_qft'], '.0f')}",
             _f(r["max_rel_err_fft"], ".1e"), _f(r["max_rel_err_qft"], ".1e")] for r in d.get("single_layer", [])]
    out = [*_table(["N", "channels", "brute SVD ms", "FFT ms", "QFT ms", "brute/FFT", "brute/QFT",
                    "rel. err FFT", "rel. err QFT"], rows)]
    models = [[m["model"], _f(m["width"], "g"), m.get("n_convs"), _f(m.get("all_singular_values_s"), ".2f"),
               _f(m.get("lipschitz_report_s"), ".2f"), _f(m.get("lipschitz_bound"), ".3g"),
               _f(m.get("clip_model_s"), ".2f")] for m in d.get("models", [])]
    if models:
        out += ["", *_table(["model", "width", "convs", "all σ s", "Lipschitz report s", "bound", "clip s"], models)]
    if d.get("notes"):
        out += ["", f"{d['notes']}"]
    return out


def md_compress(d: dict[str, Any]) -> list[str]:
    rows = [[r["name"], _f(r.get("ratio"), "g"), _f(r.get("round_to"), "d"), _f(r["macs"] / 1e9, ".4f"),
             f"{r['params']:,}", _f(r.get("latency_ms")), _f(r.get("gmac_per_s"), ".1f")] for r in d.get("runs", [])]
    return [d.get("title", ""), "", *_table(["run", "ratio", "round_to", "GMACs", "params", "latency ms", "GMAC/s"], rows),
            "", *[f"- {n}" for n in d.get("notes", [])]]


def md_export(d: dict[str, Any]) -> list[str]:
    def acc(v: Any) -> str:
        return "—" if v is None else f"{100 * v:.1f} %"
    f, c = d["fp32"], d["compact"]
    rows = [["fp32 (folded)", f"{f['bytes'] / 1e6:.2f} MB", acc(f["accuracy"]), "—", _f(f["latency"]["1_thread_ms"])],
            [f"compact (÷{c['ratio']:.2f})", f"{c['bytes'] / 1e6:.2f} MB", "=", "100 %", _f(c["latency"]["1_thread_ms"])]]
    for q in d.get("int8", []):
        rows.append([f"int8 {q['method']}" + (" + fp32 first conv" if q["first_conv_fp32"] else ""),
                     f"{q['bytes'] / 1e6:.2f} MB", acc(q["accuracy"]), f"{100 * q['top1_agreement']:.1f} %",
                     _f(q["latency"]["1_thread_ms"])])
    return [f"Model {d.get('model')} ({d.get('arch')}, {d.get('params', 0):,} params, "
            f"{d.get('macs', 0) / 1e6:.1f} MMACs/window) on {d.get('data')} ({d.get('eval_clips')} held-out clips).", "",
            *_table(["file", "size", "accuracy", "top-1 vs fp32", "ORT 1 thread ms"], rows)]


def md_clipping(d: dict[str, Any]) -> list[str]:
    rows = [[r["run"], str(r["epochs"]), _f(r.get("accuracy"), ".3f"), _f(r.get("val_accuracy", r.get("last_accuracy")), ".3f"),
             _f(r["max_conv_sigma"], ".3g"), _f(r["lipschitz_bound"], ".3g"), _f(r["seconds"], ".0f")]
            for r in d.get("rows", [])]
    return [f"`qedge train --data {d.get('data')}` (default recipe, same seed) with and without `--clip-sv`.", "",
            *_table(["run", "epochs", "held-out accuracy", "validation (older runs: last epoch)", "max conv σ", "Lipschitz bound",
                     "seconds"], rows), "", f"- {d.get('notes', '')}"]


def md_stream(d: dict[str, Any]) -> list[str]:
    def ms(x: dict[str, Any], spec: str = ".3f") -> str:
        return "–" if x.get("mean") is None else f"{x['mean']:{spec}} ± {x['sd']:{spec}}"

    rows = []
    for r in d.get("rows", []):
        s, fa = r["summary"], r["false_alarms_pooled"]
        rows.append(["/".join(Path(r["model"]).parts[-2:]), "yes" if r["open_set"] else "no",
                     _f(r.get("clip_accuracy"), ".3f"),
                     ms(s["segment_f1"]), ms(s["event_f1"]), ms(s["event_recall"]),
                     ms(s["onset_latency_median_s"], ".2f"),
                     *[f"{fa[k]['count']} in {60 * fa[k]['hours']:.0f} min (≤ {fa[k]['per_hour_95_upper']:.1f}/h)"
                       if k in fa else "–" for k in ("silence", "noise", "speech")]])
    return [f"Held-out {d.get('data')} soundscapes, seeds {d.get('seeds')}, events at {d.get('snr_db')} dB SNR, "
            f"{d.get('quiet_seconds_per_kind', 0) / 60:.1f} min of each quiet kind per seed; mean ± sd over seeds, "
            "false alarms pooled (95 % Poisson upper bound per hour).", "",
            *_table(["model", "open set", "clip acc.", "segment F1 (1 s)", "event F1", "event recall",
                     "onset latency s", "FA silence", "FA noise", "FA speech"], rows)]


MARKDOWN: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "qconv": md_qconv, "backends": md_backends, "macs": md_macs, "listen": md_listen, "features": md_features,
    "spectral": md_spectral, "compress": md_compress, "export": md_export, "clipping": md_clipping,
    "stream": md_stream,
}


def _grouped_bars(ax: Any, x: Any, series: list[tuple[list[float], str]], width: float = 0.2) -> None:
    """Side-by-side bars, one group per x position, one bar per (values, label) series."""
    offset = (len(series) - 1) / 2
    for i, (values, label) in enumerate(series):
        ax.bar(x + (i - offset) * width, values, width, label=label)


def _save(fig: Any, ax: Any, path: Path, grid_axis: str) -> Path:
    """Grid, legend, tight layout, write the PNG and close the figure."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3, axis=grid_axis)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(data: dict[str, dict[str, Any]], out: Path, slug: str) -> list[Path]:
    """PNG plots: latency vs MACs (fit + ceiling), backends bars, qconv ratios. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    written: list[Path] = []
    if "macs" in data:
        d = data["macs"]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for rt, marker in ((None, "o"), (16, "s"), (32, "^")):
            pts = [r for r in d["rows"] if r["round_to"] == rt]
            if pts:
                ax.scatter([r["macs"] / 1e9 for r in pts], [r["latency_ms"] for r in pts], marker=marker,
                           label=f"round_to {rt}" if rt else "no rounding", zorder=3)
        g = np.linspace(0, max(r["macs"] for r in d["rows"]) / 1e9 * 1.05, 50)
        fit = d["fit"]
        ax.plot(g, fit["a_ms_per_gmac"] * g + fit["b_ms"], "k--",
                label=f"fit {fit['a_ms_per_gmac']:.1f} ms/GMAC + {fit['b_ms']:.2f} ms (R² {fit['r2']:.3f})")
        ax.plot(g, g / d["ceiling_gmacs_per_s"] * 1e3, "r:",
                label=f"dense-conv ceiling {d['ceiling_gmacs_per_s']:.0f} GMAC/s (PyTorch)")
        ax.plot(g, g / d["ort_ceiling_gmacs_per_s"] * 1e3, "m:",
                label=f"dense-conv ceiling {d['ort_ceiling_gmacs_per_s']:.0f} GMAC/s (ORT)")
        ax.set_xlabel("GMACs per window")
        ax.set_ylabel("ONNX Runtime fp32 latency (ms, batch 1)")
        ax.set_title(f"{d['arch']} w{d['width']:g} pruned ({d['layers']}), {slug}, {d['threads']} thread(s)")
        written.append(_save(fig, ax, out / f"{slug}-macs.png", grid_axis="both"))
    if "backends" in data:
        rows = data["backends"]["rows"]
        ways = [("eager_quaternion", "PyTorch eager (quaternion)"), ("eager_folded", "PyTorch eager (folded)"),
                ("ort_fp32", "ONNX Runtime fp32"), ("ort_int8", "ONNX Runtime int8")]
        fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(rows)), 4.5))
        x = np.arange(len(rows))
        _grouped_bars(ax, x, [([r[f"{key}_ms"] for r in rows], label) for key, label in ways])
        ax.set_xticks(x, [f"{r['arch']}\nw{r['width']:g} {r['window_s']:g}s"
                          + (f"\n{r['threads']}t" if "threads" in r else "") for r in rows], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms, batch 1, log scale)")
        threads = data["backends"].get("threads", "?")
        ax.set_title(f"backends, {slug}, {', '.join(map(str, threads)) if isinstance(threads, list) else threads} thread(s)")
        written.append(_save(fig, ax, out / f"{slug}-backends.png", grid_axis="y"))
    if "qconv" in data:
        rows = data["qconv"]["rows"]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        x = np.arange(len(rows))
        series = [("infer_naive16_over_assembled", "infer: naive16 / assembled"),
                  ("train_naive16_over_assembled", "train: naive16 / assembled"),
                  ("infer_assembled_over_real", "infer: assembled / real"),
                  ("train_assembled_over_real", "train: assembled / real")]
        _grouped_bars(ax, x, [([r[key] for r in rows], label) for key, label in series])
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(x, [r["layer"] for r in rows], fontsize=8)
        ax.set_ylabel("time ratio (> 1: first-named slower)")
        ax.set_title(f"quaternion conv, {slug}, {data['qconv'].get('threads', '?')} thread(s)")
        written.append(_save(fig, ax, out / f"{slug}-qconv.png", grid_axis="y"))
    return written


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("torch", "onnxruntime", "onnx", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def aggregate(out: Path, quick: bool, statuses: dict[str, dict[str, Any]],
              sections: Sequence[Section]) -> dict[str, Path]:
    """Write ``<slug>.json``, ``<slug>.md`` and the PNGs from every result file of ``sections`` in ``out``
    (``sections``: the runner's :data:`~benchmarks.__main__.SECTIONS`, in report order)."""
    info = machine()
    slug = info["slug"]
    data = collect(out, slug, sections)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    info = {**info, "versions": _versions(), "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}
    records = {}
    for s in sections:
        st = statuses.get(s.name, {"status": "not run this time"})
        records[s.name] = {"key": s.key, "title": s.title, **st, "when": (data.get(s.name) or {}).get("when"),
                            "threads": (data.get(s.name) or {}).get("threads"), "result": data.get(s.name)}
    summary = {"machine": info, "when": now, "quick": quick, "headlines": headlines(data), "sections": records}
    paths = {"json": out / f"{slug}.json", "md": out / f"{slug}.md"}
    out.mkdir(parents=True, exist_ok=True)
    paths["json"].write_text(json.dumps(summary, indent=2, default=str) + "\n")
    for png in plot_all(data, out, slug):
        paths[png.stem.rsplit("-", 1)[-1] + "_png"] = png

    lines = [f"# qedge benchmarks — {info['cpu']}", "",
             f"- Machine: **{info['cpu']}**, {info['cores']} cores ({info['affinity']} usable), {info['arch']}, "
             f"Python {info['python']}; " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + ".",
             f"- Written {now}{' (QUICK run: exercises the code, figures not to be judged)' if quick else ''}. "
             "Every figure is a median of repeated runs (warm-up excluded); every ratio compares figures "
             "measured in the same run of its section. Threads are given per section.",
             "- The machine may be shared: compare rows within a section, not across machines or runs.", ""]
    lines += ["| section | status | measured | threads |", "|---|---|---|---|"]
    for s in sections:
        sec = records[s.name]
        status = sec["status"] + (f" ({sec['reason']})" if sec.get("reason") else "")
        lines.append(f"| {s.key} {s.name} | {status} | {sec['when'] or '—'} | {_f(sec['threads'], 'd')} |")
    for s in sections:
        if s.name not in data:
            continue
        lines += ["", f"## {s.title}", ""]
        if not statuses.get(s.name, {}).get("status") == "ok":
            lines += [f"_Not re-run this time: figures from {data[s.name].get('when', '?')}._", ""]
        try:
            lines += MARKDOWN[s.name](data[s.name])
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            lines += [f"_Could not tabulate this result ({type(exc).__name__}: {exc}); see the JSON._"]
        png = out / f"{slug}-{s.name}.png"
        if png.exists() and any(p == png for p in paths.values()):
            lines += ["", f"![{s.name}]({png.name})"]
    paths["md"].write_text("\n".join(lines) + "\n")
    return paths

