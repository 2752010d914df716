"""Benchmark: cost of the front end (log-mel + Δ1 Δ2 Δ3) on one CPU core.

Measures, on a real 5 s ESC-10 clip resampled to 32 kHz:
- ``offline``: ``LogMelDeltas.compute`` of the whole clip; real-time factor = time / 5 s.
- ``streaming``: ``StreamingLogMelDeltas.push`` of one hop (320 samples, 10 ms) at a time, the
  runtime's audio-loop call; median / p99 µs per hop and real-time factor = time / 10 ms. Also
  1024-sample chunks (PortAudio's usual block) per hop emitted.
- ``decode``: ``load_audio`` (Ogg Vorbis decode + 44.1→32 kHz resampling) of the clip.

One core: BLAS/OpenMP threads are limited to 1 and the process is pinned to one CPU before numpy
loads. Prints a table and writes ``benchmarks/results/features-<machine>.json``.

    python -m benchmarks.features [--quick]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
try:  # pin to one core (Linux)
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
except (AttributeError, OSError):  # pragma: no cover
    pass

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import time_ms, write_result  # noqa: E402
from qedge.data.paths import resolve_data_path  # noqa: E402
from qedge.runtime.audio import load_audio  # noqa: E402
from qedge.runtime.features import FeatureConfig, LogMelDeltas  # noqa: E402


def _clip() -> Path:
    root = resolve_data_path("esc10")
    return sorted((root / "001 - Dog bark").glob("*.ogg"))[0]


def _stream_hops(ex: LogMelDeltas, wave: np.ndarray, chunk: int) -> tuple[np.ndarray, int]:
    """Per-push wall times (µs) of streaming ``wave`` in ``chunk``-sample pushes; frames emitted."""
    stream = ex.stream()
    times = []
    frames = 0
    for start in range(0, len(wave) - chunk + 1, chunk):
        piece = wave[start : start + chunk]
        t0 = time.perf_counter()
        out = stream.push(piece)
        times.append((time.perf_counter() - t0) * 1e6)
        frames += out.shape[1]
    return np.asarray(times), frames


def run(quick: bool = False) -> dict:
    cfg = FeatureConfig()
    path = _clip()
    wave = load_audio(path, cfg.sample_rate)
    seconds = len(wave) / cfg.sample_rate
    ex = LogMelDeltas(cfg)
    repeats = 5 if quick else 30

    decode = time_ms(lambda: load_audio(path, cfg.sample_rate), repeats=3 if quick else 10, warmup=1)
    offline = time_ms(lambda: ex.compute(wave), repeats=repeats, warmup=2)
    result: dict = {
        "clip": f"{path.parent.name}/{path.name}",
        "clip_seconds": seconds,
        "config": cfg.to_dict(),
        "threads": 1,
        "decode": {**decode, "rtf": decode["median_ms"] / 1e3 / seconds},
        "offline": {**offline, "rtf": offline["median_ms"] / 1e3 / seconds, "frames": cfg.num_frames(len(wave))},
    }

    hop_seconds = cfg.hop_length / cfg.sample_rate
    passes = 1 if quick else 4
    hop_times = np.concatenate([_stream_hops(ex, wave, cfg.hop_length)[0][20:] for _ in range(passes)])
    block_times, block_frames = _stream_hops(ex, wave, 1024)
    per_frame_block = block_times.sum() / max(block_frames, 1)
    result["streaming"] = {
        "hop_samples": cfg.hop_length,
        "median_us_per_hop": float(np.median(hop_times)),
        "p99_us_per_hop": float(np.percentile(hop_times, 99)),
        "rtf": float(np.median(hop_times)) / 1e6 / hop_seconds,
        "pushes": int(hop_times.size),
        "block1024_us_per_frame": float(per_frame_block),
        "latency_samples": cfg.latency_samples,
        "latency_ms": 1e3 * cfg.latency_samples / cfg.sample_rate,
    }

    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (< 10 s)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    result = run(args.quick)
    result["quick"] = args.quick
    path = write_result("features", result)
    s, o, d = result["streaming"], result["offline"], result["decode"]
    print(f"clip {result['clip']} ({result['clip_seconds']:.2f} s), one core")
    print(f"  decode+resample  {d['median_ms']:8.2f} ms   RTF {d['rtf']:.4f}")
    print(f"  offline features {o['median_ms']:8.2f} ms   RTF {o['rtf']:.4f}   ({o['frames']} frames)")
    print(f"  streaming        {s['median_us_per_hop']:8.1f} µs/hop median, {s['p99_us_per_hop']:.1f} µs p99, "
          f"RTF {s['rtf']:.4f}; 1024-sample blocks {s['block1024_us_per_frame']:.1f} µs/frame; "
          f"latency {s['latency_samples']} samples = {s['latency_ms']:.0f} ms")
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
