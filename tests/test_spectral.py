"""qedge.spectral: QFT, exact singular values of quaternion convolutions, spectral clipping.

Ground truth is built here independently: explicit quaternion QFT / circulant matrices, and the
dense real operator of the layer's circular convolution assembled with ``qedge.nn.hamilton_kernel``
(checked against the layer's own forward pass with circular padding).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qedge.errors import QedgeError
from qedge.nn import QuaternionConv2d, hamilton_kernel
from qedge.spectral import (
    clip_kernel,
    clip_spectral_norm_,
    conv_singular_values,
    filter_spectral_norms,
    iqft,
    padded_grid,
    qconj,
    qexp,
    qft,
    qft1,
    qft2,
    qmul,
    spectral_norm,
)
from qedge.spectral.svd import conv_weight

RNG = np.random.default_rng(1234)


def random_axis(rng: np.random.Generator = RNG) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


# --------------------------------------------------------------------------- test-only helpers
def qmatvec(mat: np.ndarray, vec: np.ndarray) -> np.ndarray:
    """Quaternion matrix (N, M, 4) times vector (M, 4), left products mat[n, m]·vec[m]."""
    return qmul(mat, vec[None, :, :]).sum(axis=1)


def qft_matrix(n: int, mu: np.ndarray, sign: float = -1.0, scale: float = 1.0) -> np.ndarray:
    """Explicit QFT matrix F[u, t] = exp(sign·μ·2π u t / N)·scale (paper 002 eq. 7)."""
    u, t = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return qexp(sign * 2 * np.pi * u * t / n, mu) * scale


def dense_real_operator(real_w: np.ndarray, grid: tuple[int, int], dilation: int = 1, pad: int = 0) -> np.ndarray:
    """Dense matrix of circular cross-correlation y[n] = Σ_t W[t] x[n + d·t − p] (F.conv2d on a
    circularly padded input), rows (out, N, M), columns (in, N, M)."""
    o, i, kh, kw = real_w.shape
    n, m = grid
    a = np.zeros((o, n, m, i, n, m))
    for t1 in range(kh):
        for t2 in range(kw):
            for n1 in range(n):
                for n2 in range(m):
                    a[:, n1, n2, :, (n1 + dilation * t1 - pad) % n, (n2 + dilation * t2 - pad) % m] += real_w[:, :, t1, t2]
    return a.reshape(o * n * m, i * n * m)


def layer_dense(layer: QuaternionConv2d, grid: tuple[int, int]) -> np.ndarray:
    return dense_real_operator(layer.real_weight().detach().double().numpy(), grid, layer.dilation[0])


# --------------------------------------------------------------------------- QFT
@pytest.mark.parametrize("side", ["left", "right"])
def test_qft_matches_matrix_form_and_is_unitary(side: str) -> None:
    n = 7
    mu = random_axis()
    x = RNG.standard_normal((n, 4))
    fmat = qft_matrix(n, mu)
    if side == "left":
        ref = qmatvec(fmat, x)  # Σ_t exp(−μθ) x[t]
    else:
        ref = qmul(x[None, :, :], fmat).sum(axis=1)  # Σ_t x[t] exp(−μθ)
    assert np.allclose(qft1(x, mu, side), ref, atol=1e-12)
    # the orthonormal QFT matrix is unitary: F·Fᴴ = I (quaternion matrix product)
    fo = qft_matrix(n, mu, scale=1 / np.sqrt(n))
    fh = qconj(np.swapaxes(fo, 0, 1))
    prod = qmul(fo[:, :, None, :], fh[None, :, :, :]).sum(axis=1)
    eye = np.zeros((n, n, 4))
    eye[..., 0] = np.eye(n)
    assert np.allclose(prod, eye, atol=1e-12)
    # Parseval for the 1D and 2D orthonormal transforms
    x2 = RNG.standard_normal((3, 5, 6, 4))
    assert np.isclose(np.linalg.norm(qft(x2, mu, side, axes=(-2, -1), norm="ortho")), np.linalg.norm(x2))
    assert np.isclose(np.linalg.norm(qft1(x2, mu, side, norm="ortho")), np.linalg.norm(x2))


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("norm", ["backward", "ortho"])
def test_inverse_qft_is_identity(side: str, norm: str) -> None:
    mu = random_axis()
    x = RNG.standard_normal((2, 6, 5, 4))
    for axes in [(-1,), (-2,), (-2, -1), (0, 2)]:
        y = qft(x, mu, side, axes=axes, norm=norm)
        assert np.allclose(iqft(y, mu, side, axes=axes, norm=norm), x, atol=1e-12)
        assert not np.allclose(y, x)


def test_right_and_left_qft_differ_for_quaternion_signals() -> None:
    mu = random_axis()
    x = RNG.standard_normal((8, 4))
    assert not np.allclose(qft1(x, mu, "left"), qft1(x, mu, "right"))


@pytest.mark.parametrize("n", [5, 8])
def test_prop_3_5_right_qft_gives_left_eigenvalues_of_circulant(n: int) -> None:
    """Paper 002 Prop. 3.5: C·q_u = λ_u·q_u with q_u the columns of the inverse QFT matrix and
    λ = right QFT of the kernel, for random kernels and random axes."""
    for _ in range(3):
        mu = random_axis()
        w = RNG.standard_normal((n, 4))
        circ = np.stack([np.stack([w[(r - c) % n] for c in range(n)]) for r in range(n)])  # C[r, c] = w[r − c]
        lam = qft1(w, mu, "right")
        inv = qft_matrix(n, mu, sign=+1.0)  # columns q_u[t] = exp(+μ 2π u t / N)
        for u in range(n):
            q = inv[:, u]
            lhs = qmatvec(circ, q)
            rhs = qmul(lam[u][None, :], q)
            assert np.allclose(lhs, rhs, atol=1e-11)
        # the LEFT QFT does not give them (quaternion kernels): the distinction matters
        lam_left = qft1(w, mu, "left")
        assert not all(np.allclose(qmatvec(circ, inv[:, u]), qmul(lam_left[u][None], inv[:, u])) for u in range(1, n))


def test_prop_3_9_two_dimensional_left_eigenvalues() -> None:
    n, m = 4, 5
    mu = random_axis()
    kern = RNG.standard_normal((n, m, 4))
    lam = qft2(kern, mu, "right")
    for u, v in [(0, 0), (1, 2), (3, 4)]:
        idx1, idx2 = np.meshgrid(np.arange(n), np.arange(m), indexing="ij")
        e = qexp(2 * np.pi * (u * idx1 / n + v * idx2 / m), mu)
        y = np.zeros((n, m, 4))
        for a in range(n):
            for b in range(m):
                y += qmul(kern[a, b][None, None], np.roll(e, (a, b), axis=(0, 1)))  # Σ K[a,b] e[x − (a,b)]
        assert np.allclose(y, qmul(lam[u, v][None, None], e), atol=1e-11)


# --------------------------------------------------------------------------- singular values
def test_dense_helper_matches_the_layer_forward() -> None:
    torch.manual_seed(0)
    layer = QuaternionConv2d(8, 4, 3, padding=1, bias=False).double()
    x = torch.randn(1, 8, 5, 6, dtype=torch.float64)
    y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), layer.real_weight())
    a = dense_real_operator(layer.real_weight().detach().numpy(), (5, 6), 1, pad=1)
    assert np.allclose(a @ x.numpy().ravel(), y.detach().numpy().ravel(), atol=1e-12)


CASES = [  # (in real, out real, kernel, grid, dilation)
    (4, 8, 3, (5, 6), 1),
    (8, 4, 3, (4, 4), 1),
    (4, 4, 2, (3, 5), 1),
    (8, 8, 3, (6, 5), 2),
    (4, 4, 5, (3, 3), 1),  # kernel larger than the grid: taps alias
]


@pytest.mark.parametrize("case", CASES)
def test_singular_values_match_dense_svd(case: tuple) -> None:
    cin, cout, k, grid, dil = case
    torch.manual_seed(sum(grid) + k)
    layer = QuaternionConv2d(cin, cout, k, dilation=dil, bias=False).double()
    ref = np.linalg.svd(layer_dense(layer, grid), compute_uv=False)
    # each quaternion singular value appears exactly 4 times in the real operator
    groups = ref.reshape(-1, 4)
    assert np.abs(groups - groups[:, :1]).max() <= 1e-10 * ref[0]
    for method in ("fft", "qft"):
        sv = conv_singular_values(layer, grid, method=method, mu=random_axis())
        assert sv.shape == (grid[0] * grid[1] * min(cin, cout) // 4,)
        assert np.all(np.diff(sv) <= 0)
        assert np.abs(np.repeat(sv, 4) - ref).max() <= 1e-10 * ref[0]
        assert abs(spectral_norm(layer, grid, method=method) - ref[0]) <= 1e-10 * ref[0]


def test_qft_route_is_axis_independent_and_accepts_raw_weights() -> None:
    w = torch.randn(4, 2, 3, 3, 3)
    a = conv_singular_values(w, (6, 4), method="qft", mu=(0, 0, 1))
    b = conv_singular_values(w.numpy(), (6, 4), method="qft", mu=random_axis())
    c = conv_singular_values(w, (6, 4), method="fft")
    assert np.allclose(a, b, rtol=1e-12) and np.allclose(a, c, rtol=1e-12)


def test_depthwise_singular_values_are_the_union_over_channels() -> None:
    w = RNG.standard_normal((4, 3, 1, 3, 3))
    grid = (4, 5)
    sv = conv_singular_values(w, grid, depthwise=True)
    ref = []
    for c in range(3):
        kern = hamilton_kernel(*torch.from_numpy(w[:, c:c + 1]).unbind(0)).numpy()
        ref.append(np.linalg.svd(dense_real_operator(kern, grid), compute_uv=False)[::4])
    ref = np.sort(np.concatenate(ref))[::-1]
    assert np.abs(sv - ref).max() <= 1e-10 * ref[0]
    assert np.allclose(conv_singular_values(w, grid, method="qft", depthwise=True), ref, rtol=1e-10)
    # clipping a depthwise weight in place keeps its shape and meets the bound on every channel
    c = 0.5 * ref[0]
    assert clip_spectral_norm_(w, c, grid, depthwise=True) <= c * (1 + 1e-3)
    assert w.shape == (4, 3, 1, 3, 3)
    assert conv_singular_values(w, grid, depthwise=True)[0] <= c * (1 + 1e-3)


def test_real_grouped_conv_singular_values() -> None:
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(6, 9, 3, groups=3).double()
    grid = (5, 4)
    w = conv.weight.detach().numpy()
    dense = np.zeros((9 * 20, 6 * 20))
    for g in range(3):
        dense[g * 60:(g + 1) * 60, g * 40:(g + 1) * 40] = dense_real_operator(w[3 * g:3 * g + 3], grid)
    ref = np.linalg.svd(dense, compute_uv=False)
    assert np.abs(conv_singular_values(conv, grid) - ref).max() <= 1e-10 * ref[0]


def test_filter_spectral_norms_match_dense_rows() -> None:
    torch.manual_seed(5)
    layer = QuaternionConv2d(8, 12, 3, bias=False).double()
    grid = (5, 5)
    norms = filter_spectral_norms(layer, grid)
    w = layer.weight.detach()
    assert norms.shape == (3,)
    for o in range(3):
        kern = hamilton_kernel(*w[:, o:o + 1].unbind(0)).numpy()
        ref = np.linalg.norm(dense_real_operator(kern, grid), 2)
        assert abs(norms[o] - ref) <= 1e-10 * ref
    assert norms.max() <= spectral_norm(layer, grid) * (1 + 1e-12)


@pytest.mark.parametrize("stride", [1, 2])
def test_padded_grid_bounds_the_zero_padded_strided_layer(stride: int) -> None:
    torch.manual_seed(7 + stride)
    layer = QuaternionConv2d(4, 8, 3, padding=1, stride=stride, bias=False).double()
    size = (5, 6)
    basis = torch.eye(4 * 30, dtype=torch.float64).reshape(-1, 4, *size)
    with torch.no_grad():
        dense = layer(basis).reshape(4 * 30, -1).T.numpy()
    true = np.linalg.norm(dense, 2)
    bound = spectral_norm(layer, padded_grid(size, layer.kernel_size, layer.dilation))
    assert true <= bound * (1 + 1e-12)
    assert bound <= 1.5 * true  # and not wildly loose


# --------------------------------------------------------------------------- clipping
def dense_norm(weight: torch.Tensor, grid: tuple[int, int]) -> float:
    real = hamilton_kernel(*weight.detach().double().unbind(0)).numpy()
    return float(np.linalg.norm(dense_real_operator(real, grid), 2))


def test_clip_keeps_support_dtype_and_meets_the_bound() -> None:
    torch.manual_seed(11)
    layer = QuaternionConv2d(8, 8, 3, padding=1, bias=False)  # float32
    grid = (6, 6)
    before = layer.weight.detach().clone()
    sigma0 = spectral_norm(layer, grid)
    c = 0.5 * sigma0
    out = clip_spectral_norm_(layer, c, grid)
    assert layer.weight.dtype == torch.float32 and layer.weight.shape == (4, 2, 2, 3, 3)
    assert out <= c * (1 + 1e-3)
    assert dense_norm(layer.weight, grid) <= c * (1 + 1e-3) * (1 + 1e-6)  # float32 rounding of the copy
    assert not torch.allclose(layer.weight, before)


def test_clip_with_full_support_is_exact_in_one_step() -> None:
    """Kernel support = grid: nothing to crop, one clip gives σ_max = c exactly and only
    the singular values above c change."""
    w = RNG.standard_normal((4, 2, 2, 3, 3))
    cw = conv_weight(w)
    sv0 = conv_singular_values(w, (3, 3))
    c = float(np.median(sv0))
    new, sigma, info = clip_kernel(cw, c, (3, 3))
    assert info["steps"] == 1 and not info["rescaled"]
    sv1 = conv_singular_values(new.w[0], (3, 3))
    assert abs(sigma - c) <= 1e-9 * c
    assert np.allclose(sv1, np.minimum(sv0, c), atol=1e-9)


def test_clip_alternates_when_cropping_breaks_the_bound() -> None:
    w = RNG.standard_normal((4, 2, 2, 3, 3))
    grid = (8, 8)
    c = 0.3 * spectral_norm(w, grid)
    new, sigma, info = clip_kernel(conv_weight(w), c, grid, max_iter=1)
    # one clip + crop overshoots (design.md §7), so the function falls back and verifies
    assert info["rescaled"] and sigma <= c * (1 + 1e-3)
    new2, sigma2, info2 = clip_kernel(conv_weight(w), c, grid, max_iter=40)
    assert sigma2 <= c * (1 + 1e-3)
    assert abs(spectral_norm(new2.w[0], grid) - sigma2) <= 1e-9 * sigma2
    # more alternation stays closer to the original kernel than the early fallback rescale
    assert np.linalg.norm(new2.w - w[None]) < np.linalg.norm(new.w - w[None])


def test_clip_leaves_a_layer_under_the_bound_unchanged_and_clips_real_convs() -> None:
    torch.manual_seed(2)
    layer = QuaternionConv2d(4, 4, 3, bias=False)
    before = layer.weight.detach().clone()
    s = clip_spectral_norm_(layer, 1e6, (5, 5))
    assert torch.equal(layer.weight, before) and s == pytest.approx(spectral_norm(layer, (5, 5)), rel=1e-12)
    conv = torch.nn.Conv2d(8, 8, 3).double()
    c = spectral_norm(conv, (7, 7)) / 3
    assert clip_spectral_norm_(conv, c, (7, 7)) <= c * (1 + 1e-3)
    ref = np.linalg.norm(dense_real_operator(conv.weight.detach().numpy(), (7, 7)), 2)
    assert ref <= c * (1 + 1e-3)


def test_bad_inputs_raise_one_line_qedge_errors() -> None:
    w = RNG.standard_normal((4, 1, 1, 3, 3))
    with pytest.raises(QedgeError, match="alias"):
        clip_spectral_norm_(w, 1.0, (2, 2))
    with pytest.raises(QedgeError, match="max_sv must be positive"):
        clip_spectral_norm_(w, 0.0, (5, 5))
    with pytest.raises(QedgeError, match="expected a quaternion conv weight"):
        conv_singular_values(np.ones((3, 3)), (5, 5))
    with pytest.raises(QedgeError, match="method"):
        spectral_norm(w, (5, 5), method="svd")
