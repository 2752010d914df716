"""Benchmark: exact singular values of quaternion convolutions, fast routes vs brute force (design.md §7).

(a) One QuaternionConv2d (3×3) on an N×N circular grid, N = 8, 16, 32: all singular values by
    - ``fft``: Cayley–Dickson complex adjoint, per-frequency 2C_out × 2C_in blocks;
    - ``qft``: the paper's route (right QFT w.r.t. μ = (i+j+k)/√3, simplex/perplex blocks);
    - ``brute``: numpy SVD of the dense real 4N²C_out × 4N²C_in matrix (built with the layer's own
      forward on a basis; the build is timed separately and NOT included in the ratio).
    Brute force is O((N²C)³), so the channel counts are small: 1→1 quaternion channels at every N,
    2→2 as well at N = 8 and (full run) 16 (4→4 / 8→8 real channels). Everything single-threaded. Reports times, ratios brute/fft and
    brute/qft, and the max relative error of each route against the dense SVD.
(b) Every σ of a whole QCNN (qcnn6, qcnn14 at width 0.25) at the input sizes its convs see for a
    5 s clip (501 frames × 64 mels), each on its zero-padding bound grid (input + k − 1); plus
    the time of the network's Lipschitz report and of one model-wide clip.

    python -m benchmarks.spectral [--quick]      (--quick: N = 8, 16 (1→1) and qcnn6 only, < 15 s)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import machine, time_ms, write_result
from qedge.nn import QuaternionConv2d
from qedge.spectral import conv_singular_values, input_sizes, lipschitz_report, padded_grid
from qedge.spectral.clip import clip_model_


def dense_operator(layer: QuaternionConv2d, n: int) -> np.ndarray:
    """Dense real matrix of the layer's circular convolution on an n×n grid (columns = basis images)."""
    c_in = layer.in_channels
    basis = torch.eye(c_in * n * n, dtype=torch.float64).reshape(-1, c_in, n, n)
    pad = layer.kernel_size[0] // 2
    with torch.no_grad():
        out = F.conv2d(F.pad(basis, (pad, pad, pad, pad), mode="circular"), layer.real_weight().double())
    return out.reshape(c_in * n * n, -1).T.numpy()


def single_layer(quick: bool) -> list[dict]:
    cases = [(8, 1), (8, 2), (16, 1)] + ([] if quick else [(16, 2), (32, 1)])
    rows = []
    for n, q in cases:
        torch.manual_seed(n + q)
        layer = QuaternionConv2d(4 * q, 4 * q, 3, padding=1, bias=False).double()
        t0 = time.perf_counter()
        dense = dense_operator(layer, n)
        build_s = time.perf_counter() - t0
        ref = np.linalg.svd(dense, compute_uv=False)
        brute_reps = 3 if dense.shape[0] <= 1024 else 1
        brute_ms = time_ms(lambda: np.linalg.svd(dense, compute_uv=False), repeats=brute_reps, warmup=0)["median_ms"]
        rep = 5 if quick else 9
        fft = time_ms(lambda: conv_singular_values(layer, (n, n), "fft"), repeats=rep, warmup=2)
        qft = time_ms(lambda: conv_singular_values(layer, (n, n), "qft"), repeats=rep, warmup=2)
        err = {}
        for method in ("fft", "qft"):
            sv = np.repeat(conv_singular_values(layer, (n, n), method), 4)
            err[method] = float(np.abs(sv - ref).max() / ref[0])
        row = {
            "N": n, "quaternion_channels": f"{q}->{q}", "dense_shape": list(dense.shape),
            "brute_svd_ms": brute_ms, "dense_build_ms": build_s * 1e3,
            "fft_ms": fft["median_ms"], "qft_ms": qft["median_ms"],
            "speedup_fft": brute_ms / fft["median_ms"], "speedup_qft": brute_ms / qft["median_ms"],
            "max_rel_err_fft": err["fft"], "max_rel_err_qft": err["qft"],
        }
        rows.append(row)
        print(f"N={n:3d} {q}->{q} dense {dense.shape[0]}x{dense.shape[1]}: brute {brute_ms:9.1f} ms | "
              f"fft {fft['median_ms']:7.2f} ms (x{row['speedup_fft']:,.0f}, err {err['fft']:.1e}) | "
              f"qft {qft['median_ms']:7.2f} ms (x{row['speedup_qft']:,.0f}, err {err['qft']:.1e})")
    return rows


def whole_model(name: str, width: float, frames: int = 501, mels: int = 64, clip: bool = True) -> dict:
    from qedge.models import build

    torch.manual_seed(0)
    model = build(name, 10, width=width, n_mels=mels).eval()
    shape = (1, 4, frames, mels)
    sizes = input_sizes(model, shape)
    modules = dict(model.named_modules())
    per_layer = []
    t_all = time.perf_counter()
    for lname, size in sizes.items():
        mod = modules[lname]
        grid = padded_grid(size, mod.kernel_size, mod.dilation)
        t0 = time.perf_counter()
        sv = conv_singular_values(mod, grid)
        per_layer.append({"layer": lname, "input_size": list(size), "grid": list(grid),
                          "quaternion_channels": f"{mod.in_channels // 4}->{mod.out_channels // 4}",
                          "n_singular_values": int(sv.size), "sigma_max": float(sv[0]),
                          "seconds": time.perf_counter() - t0})
    all_s = time.perf_counter() - t_all
    t0 = time.perf_counter()
    report = lipschitz_report(model, shape)
    lip_s = time.perf_counter() - t0
    result = {"model": name, "width": width, "input_shape": list(shape), "n_convs": len(sizes),
              "all_singular_values_s": all_s, "n_singular_values": sum(r["n_singular_values"] for r in per_layer),
              "lipschitz_report_s": lip_s, "lipschitz_bound": report.bound, "layers": per_layer}
    msg = (f"{name} w={width}: every σ of {len(sizes)} convs ({result['n_singular_values']:,} values) in "
           f"{all_s:.2f} s; Lipschitz report {lip_s:.2f} s (bound {report.bound:.3g})")
    if clip:
        c = float(np.median([r["sigma_max"] for r in per_layer]))
        t0 = time.perf_counter()
        clip_model_(model, c, sizes)
        result["clip_model_s"] = time.perf_counter() - t0
        result["clip_to"] = c
        msg += f"; clip_model_ to {c:.3g}: {result['clip_model_s']:.2f} s"
    print(msg)
    return result


def run(quick: bool = False) -> dict:
    from threadpoolctl import threadpool_limits

    # One thread everywhere, for every route alike: numpy does the work (torch's OpenMP pool would
    # only compete), and multi-threaded BLAS on many small matrices is erratic on a shared machine.
    torch.set_num_threads(1)
    print(f"machine: {machine()['cpu']} ({machine()['cores']} cores), 1 thread")
    with threadpool_limits(limits=1):
        layers = single_layer(quick)
        models = [whole_model("qcnn6", 0.25, clip=not quick)]
        if not quick:
            models.append(whole_model("qcnn14", 0.25))
    data = {"quick": quick, "threads": 1, "single_layer": layers, "models": models,
            "notes": "brute = numpy SVD of the dense real operator (build excluded); small channel counts "
                     "because brute force is O((N^2 C)^3); model layers on grid input+k-1 (zero-padding bound)"}
    path = write_result("spectral", data)
    print(f"wrote {path}")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (< 15 s)")
    run(parser.parse_args().quick)


if __name__ == "__main__":
    main()
