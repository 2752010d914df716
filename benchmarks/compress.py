"""Latency vs MACs of pruned quaternion models, and what ``--round-to`` does to latency.

Prunes an (untrained: latency does not depend on the weights' values) model of the given family at
several ratios, with and without width rounding, and measures every deployed model the same way
(:func:`qedge.compress.report.measure_latency`: folded model → ONNX → ONNX Runtime, batch 1,
median of ``--repeats`` runs) in ONE process, so the ratios between rows are meaningful on this
machine. Writes report.md / report.json / report.png into ``--out``.

    .venv/bin/python benchmarks/compress.py --arch qcnn6 --width 0.5 --frames 501 --classes 10 \
        --ratios 0.25,0.5,0.75 --round-to 8,16,32 --out benchmarks/results/compress
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="qcnn6")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--frames", type=int, default=501, help="window length in frames (5 s at 10 ms hop: 501)")
    parser.add_argument("--mels", type=int, default=64)
    parser.add_argument("--method", default="l1")
    parser.add_argument("--layers", default="later")
    parser.add_argument("--ratios", default="0.25,0.5,0.75")
    parser.add_argument("--round-to", default="8,16,32", help="comma-separated N values (multiples of 4)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compress"))
    args = parser.parse_args()

    import torch

    from qedge.compress.prune import prune
    from qedge.compress.report import measure_latency, write_report
    from qedge.models import build
    from qedge.profile import profile
    from qedge.runtime.features import FeatureConfig

    torch.manual_seed(0)
    model = build(args.arch, args.classes, width=args.width, n_mels=args.mels).eval()
    features = FeatureConfig(n_mels=args.mels).to_dict()
    meta = {"labels": [str(i) for i in range(args.classes)], "features": features, "clip_seconds": 1.0,
            "task": "single-label", "arch": args.arch, "arch_kwargs": model.arch_kwargs}
    shape = (1, 4, args.frames, args.mels)
    example = torch.zeros(shape)
    configs = [(0.0, None)]
    for r in (float(v) for v in args.ratios.split(",") if v.strip()):
        configs.append((r, None))
        configs += [(r, int(n)) for n in args.round_to.split(",") if n.strip()]
    rows = []
    for ratio, round_to in configs:
        start = time.perf_counter()
        m = model if ratio == 0 else prune(model, args.method, ratio, args.layers, example_input=example,
                                          round_to=round_to)
        prune_s = time.perf_counter() - start
        prof = profile(m, shape)
        ms, backend = measure_latency(m, meta, args.frames, repeats=args.repeats, threads=args.threads)
        name = "unpruned" if ratio == 0 else f"{args.method}-p{ratio:g}" + (f"-r{round_to}" if round_to else "")
        rows.append({"name": name, "method": args.method if ratio else None, "ratio": ratio or None,
                     "round_to": round_to, "params": prof.params, "macs": prof.macs, "latency_ms": ms,
                     "latency_backend": backend, "prune_seconds": round(prune_s, 3),
                     "gmac_per_s": prof.macs / 1e9 / (ms / 1e3)})
        print(f"{name:>22}: {prof.params:>10,} params {prof.macs / 1e9:8.4f} GMACs {ms:8.2f} ms "
              f"({rows[-1]['gmac_per_s']:.1f} GMAC/s)", flush=True)
    notes = [f"{args.arch} width {args.width}, {args.classes} classes, window {args.frames}×{args.mels}, "
             f"criterion {args.method} on '{args.layers}' layers, untrained weights (latency only)",
             f"ONNX Runtime threads: {args.threads or 'default'}; machine shared, compare rows of this run only"]
    paths = write_report(rows, args.out, metric="accuracy", title=f"latency vs MACs: pruned {args.arch}", notes=notes)
    print(f"wrote {paths['md']}")


if __name__ == "__main__":
    main()
