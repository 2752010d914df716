"""Benchmark (a): how to compute a quaternion convolution.

Three ways to compute the same layer, timed in the same run:
- ``assembled``: qedge's ``QuaternionConv2d`` — the real Hamilton kernel is assembled once per call
  (design.md §3) and applied as ONE ``conv2d``;
- ``naive16``: the Hamilton product written out as sixteen real convolutions of the component
  blocks (y_r = R x_r − I x_i − J x_j − K x_k, …), what a literal implementation does;
- ``real``: an ``nn.Conv2d`` of the same real width (4× the parameters, same MACs).

For inference (no grad, batch 1) and a training step (forward + backward, batch 8). The three ways
are timed interleaved (one call of each per round, warm-up rounds excluded), one intra-op thread
by default (on a shared 2-core machine more threads mostly measure OpenMP contention). Reports
medians and the ratios naive16/assembled and assembled/real.

    python -m benchmarks.qconv [--quick] [--threads N]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks.common import interleaved_ms, write_result
from qedge.nn import QuaternionConv2d

# (real channels in, real channels out, frames, mels): the shapes QCNN14 blocks 2–5 see at width 0.5
LAYERS = [(32, 64, 250, 32), (64, 128, 125, 16), (128, 256, 62, 8), (256, 512, 31, 4)]


def naive_hamilton(layer: QuaternionConv2d, x: torch.Tensor) -> torch.Tensor:
    """The left Hamilton product as sixteen real convolutions (design.md §3 written out)."""
    r, i, j, k = layer.weight.unbind(0)
    xr, xi, xj, xk = x.chunk(4, dim=1)

    def conv(w: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        return F.conv2d(part, w, None, layer.stride, layer.padding, layer.dilation)

    yr = conv(r, xr) - conv(i, xi) - conv(j, xj) - conv(k, xk)
    yi = conv(i, xr) + conv(r, xi) - conv(k, xj) + conv(j, xk)
    yj = conv(j, xr) + conv(k, xi) + conv(r, xj) - conv(i, xk)
    yk = conv(k, xr) - conv(j, xi) + conv(i, xj) + conv(r, xk)
    return torch.cat([yr, yi, yj, yk], dim=1)


def run(quick: bool = False, threads: int = 1) -> dict:
    """Time the three ways for every layer of ``LAYERS`` (two in quick mode); returns the result dict."""
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    repeats = 5 if quick else 20
    layers = LAYERS[:2] if quick else LAYERS
    rows = []
    for c_in, c_out, t, m in layers:
        q = QuaternionConv2d(c_in, c_out, 3, padding=1, bias=False)
        real = torch.nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        ways = {"assembled": q, "naive16": lambda x, q=q: naive_hamilton(q, x), "real": real}
        x1 = torch.randn(1, c_in, t, m)
        x8 = torch.randn(8, c_in, t, m)
        with torch.no_grad():
            torch.testing.assert_close(naive_hamilton(q, x1), q(x1), rtol=1e-4, atol=1e-4)
        row = {"layer": f"{c_in}->{c_out} @ {t}x{m}", "macs_per_item": c_out * c_in * 9 * t * m}

        def infer(fn) -> None:
            with torch.no_grad():
                fn(x1)

        def step(fn, params) -> None:
            for p in params:
                p.grad = None
            fn(x8).square().mean().backward()

        params = {"assembled": list(q.parameters()), "naive16": list(q.parameters()), "real": list(real.parameters())}
        inf = interleaved_ms({n: (lambda fn=fn: infer(fn)) for n, fn in ways.items()}, repeats=repeats)
        trn = interleaved_ms({n: (lambda fn=fn, n=n: step(fn, params[n])) for n, fn in ways.items()},
                             repeats=max(3, repeats // 2))
        for name in ways:
            row[f"infer_{name}_ms"] = inf[name]["median_ms"]
            row[f"train_{name}_ms"] = trn[name]["median_ms"]
        for phase in ("infer", "train"):
            row[f"{phase}_naive16_over_assembled"] = row[f"{phase}_naive16_ms"] / row[f"{phase}_assembled_ms"]
            row[f"{phase}_assembled_over_real"] = row[f"{phase}_assembled_ms"] / row[f"{phase}_real_ms"]
        rows.append(row)
        print(f"{row['layer']:>24}  infer  assembled {row['infer_assembled_ms']:7.2f} ms  naive16 "
              f"{row['infer_naive16_ms']:7.2f} ms (x{row['infer_naive16_over_assembled']:.2f})  real "
              f"{row['infer_real_ms']:7.2f} ms (assembled/real x{row['infer_assembled_over_real']:.2f})")
        print(f"{'':>24}  train  assembled {row['train_assembled_ms']:7.2f} ms  naive16 "
              f"{row['train_naive16_ms']:7.2f} ms (x{row['train_naive16_over_assembled']:.2f})  real "
              f"{row['train_real_ms']:7.2f} ms (assembled/real x{row['train_assembled_over_real']:.2f})")
    return {"threads": torch.get_num_threads(), "quick": quick, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two layers, few repeats (exercise, not judge)")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch intra-op threads (default 1)")
    args = parser.parse_args()
    path = write_result("qconv", run(args.quick, args.threads))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
