"""Benchmark: `qedge listen` per-hop latency and real-time factor, and latency against MACs.

For each ONNX model (given on the command line, or built here: untrained QCNN6/10/14 at small
widths, exported by ``qedge.export.onnx.export_onnx`` with 1 s windows, plus their INT8 QDQ
versions by ``qedge.calib.quantize.quantize_int8`` calibrated on real ESC-10 windows), the runtime's
real loop (``Listener`` + ``FileSource`` paced in real time, ONNX Runtime CPU) listens to real
ESC-10 audio and reports, per hop: feature, inference and end-to-end latency (p50/p95/p99 ms), the
real-time factor RTF = (feature + inference seconds) / audio seconds, MACs per window and the
achieved GMAC/s. A least-squares line inference_ms ≈ a + b·GMACs summarises latency against MACs
(fp32 and int8 separately).

    python -m benchmarks.listen [--quick] [--threads N] [--seconds S] [MODEL.onnx ...]

Prints a table and writes ``benchmarks/results/listen-<machine>.json``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import write_result

SR = 32000
#: (arch, width) of the models built when none are given.
FULL = [("qcnn6", 0.25), ("qcnn10", 0.25), ("qcnn14", 0.25), ("qcnn14", 0.5)]
QUICK = [("qcnn6", 0.25), ("qcnn14", 0.25)]


def esc10_audio(seconds: float) -> tuple[np.ndarray, list[str]]:
    """Real recordings: ESC-10 clips (one per class, round robin) at 32 kHz, concatenated."""
    from qedge.data.paths import resolve_data_path
    from qedge.runtime.audio import load_audio

    root = resolve_data_path("esc10")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    parts, names, total, i = [], [], 0, 0
    while total < seconds * SR:
        clip = sorted(classes[i % len(classes)].glob("*.ogg"))[i // len(classes)]
        wave = load_audio(clip, SR)
        parts.append(wave)
        names.append(f"{clip.parent.name}/{clip.name}")
        total += len(wave)
        i += 1
    return np.concatenate(parts)[: int(seconds * SR)], names


def build_models(specs: list[tuple[str, float]], out: Path, int8: bool, audio: np.ndarray) -> list[Path]:
    """Untrained qedge models exported to ONNX (1 s windows, ESC-10 labels), optionally INT8 too."""
    import torch

    from qedge.calib.quantize import quantize_int8
    from qedge.calib.reader import FeatureReader
    from qedge.export.onnx import export_onnx, model_info
    from qedge.models import build
    from qedge.runtime.features import FeatureConfig, LogMelDeltas

    torch.manual_seed(0)
    cfg = FeatureConfig()
    labels = [f"class{i}" for i in range(10)]
    meta = {"features": cfg.to_dict(), "clip_seconds": 1.0, "labels": labels, "task": "single-label"}
    feats = LogMelDeltas(cfg).compute(audio[: 8 * SR])
    frames = cfg.num_frames(SR)
    calib = np.stack([feats[:, s:s + frames] for s in range(0, feats.shape[1] - frames, frames // 2)][:16])
    paths = []
    for arch, width in specs:
        model = build(arch, num_classes=len(labels), width=width).eval()
        meta.update(arch=arch, arch_kwargs=model.arch_kwargs)
        info = model_info(model, meta, lipschitz=False)
        fp32 = export_onnx(model, info, out / f"{arch}-w{width:g}.onnx", dynamic_time=False)
        paths.append(fp32)
        if int8:
            paths.append(quantize_int8(fp32, out / f"{arch}-w{width:g}.int8.onnx",
                                       FeatureReader.from_arrays(calib.astype(np.float32))))
    return paths


def measure(model: Path, wav: Path, threads: int) -> dict[str, Any]:
    """One real-time listening run of ``model`` over ``wav``: the Listener's summary, flattened."""
    from qedge.runtime.backends import OrtBackend
    from qedge.runtime.listen import Listener
    from qedge.runtime.sources import FileSource

    backend = OrtBackend(model, threads=threads)
    listener = Listener(backend, threshold=0.0)
    summary = listener.run(FileSource(wav, listener.config.sample_rate, realtime=True))
    info = backend.info
    lat = summary["latency_ms"]
    return {
        "model": model.name,
        "arch": info.arch.get("name"),
        "width": info.arch.get("kwargs", {}).get("width"),
        "precision": "int8" if info.extra.get("quantization") or ".int8" in model.name else "fp32",
        "params": info.params,
        "macs_per_window": summary["macs_per_window"],
        "window_s": summary["window_s"],
        "hop_s": summary["hop_s"],
        "windows": summary["windows"],
        "windows_skipped": summary["windows_skipped"],
        "features_ms": lat["features"],
        "inference_ms": lat["inference"],
        "end_to_end_ms": lat["end_to_end"],
        "real_time_factor": summary["real_time_factor"],
        "gmacs_per_s": summary["gmacs_per_s"],
        "dropped_audio_s": summary["dropped_audio_s"],
    }


def fit(rows: list[dict[str, Any]]) -> dict[str, float] | None:
    """Least squares inference p50 (ms) ≈ intercept + slope · GMACs over ``rows`` (≥ 2 sizes)."""
    if len({r["macs_per_window"] for r in rows}) < 2:
        return None
    g = np.array([r["macs_per_window"] / 1e9 for r in rows])
    ms = np.array([r["inference_ms"]["p50"] for r in rows])
    slope, intercept = np.polyfit(g, ms, 1)
    return {"intercept_ms": float(intercept), "ms_per_gmac": float(slope),
            "gmacs_per_s_marginal": float(1000.0 / slope) if slope > 0 else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, help="ONNX models to measure (default: build QCNNs)")
    parser.add_argument("--quick", action="store_true", help="two small models, 3 s of audio each")
    parser.add_argument("--seconds", type=float, default=None, help="audio per run (default 10, quick 3)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    parser.add_argument("--no-int8", action="store_true", help="built models: skip the INT8 versions")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    audio, clips = esc10_audio(max(seconds, 8.0))
    with tempfile.TemporaryDirectory(prefix="qedge-bench-listen-") as tmp:
        tmpdir = Path(tmp)
        import soundfile as sf

        wav = tmpdir / "esc10.wav"
        sf.write(wav, audio[: int(seconds * SR)], SR, subtype="FLOAT")
        models = args.models or build_models(QUICK if args.quick else FULL, tmpdir, not args.no_int8, audio)
        rows = []
        for model in models:
            row = measure(model, wav, args.threads)
            rows.append(row)
            print(f"{row['model']:<24} {row['precision']:<5} {row['macs_per_window'] / 1e6:8.1f} MMAC  "
                  f"feat p50 {row['features_ms']['p50']:6.2f} ms  inf p50 {row['inference_ms']['p50']:7.2f} "
                  f"p99 {row['inference_ms']['p99']:7.2f} ms  e2e p50 {row['end_to_end_ms']['p50']:7.2f} "
                  f"p99 {row['end_to_end_ms']['p99']:7.2f} ms  RTF {row['real_time_factor']:.4f}  "
                  f"{row['gmacs_per_s'] or 0:6.2f} GMAC/s  skipped {row['windows_skipped']}", flush=True)
    fits = {p: fit([r for r in rows if r["precision"] == p]) for p in ("fp32", "int8")}
    for p, f in fits.items():
        if f:
            print(f"{p}: inference ≈ {f['intercept_ms']:.2f} ms + {f['ms_per_gmac']:.1f} ms/GMAC")
    path = write_result("listen", {"threads": args.threads, "audio_seconds": seconds, "clips": clips[:5],
                                   "quick": args.quick, "rows": rows, "latency_vs_macs": fits})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
