"""Quaternion layers (qedge.nn): the Hamilton sign convention pinned against independent
computations, kernel assembly round trip and rejection, initialisation scale, bad channel counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qedge.nn import (
    QuaternionConv2d,
    QuaternionLinear,
    hamilton_kernel,
    is_hamilton,
    split_hamilton,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- an independent quaternion product: q = a + b i + c j + d k  <->  2×2 complex matrix ---------
def _as_complex_matrix(q: np.ndarray) -> np.ndarray:
    a, b, c, d = q
    return np.array([[a + 1j * b, c + 1j * d], [-c + 1j * d, a - 1j * b]])


def _from_complex_matrix(m: np.ndarray) -> np.ndarray:
    return np.array([m[0, 0].real, m[0, 0].imag, m[0, 1].real, m[0, 1].imag])


def _qmul(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Hamilton product p ⊗ q through the complex-matrix representation (no sign table)."""
    return _from_complex_matrix(_as_complex_matrix(p) @ _as_complex_matrix(q))


ONE, I, J, K = np.eye(4)


def _layer_product(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """w ⊗ x computed by a 1-quaternion QuaternionLinear with weight w."""
    layer = QuaternionLinear(4, 4, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w).view(4, 1, 1))
    return layer(torch.from_numpy(x)[None]).detach().numpy()[0]


def test_independent_product_knows_the_units() -> None:
    # Sanity of the reference itself: i² = j² = k² = ijk = −1.
    np.testing.assert_allclose(_qmul(I, I), -ONE)
    np.testing.assert_allclose(_qmul(_qmul(I, J), K), -ONE)


@pytest.mark.parametrize("w, x, expected", [
    (I, J, K), (J, I, -K), (J, K, I), (K, J, -I), (K, I, J), (I, K, -J),
    (I, I, -ONE), (J, J, -ONE), (K, K, -ONE), (ONE, K, K),
])
def test_unit_products(w: np.ndarray, x: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(_layer_product(w, x), expected, atol=1e-12)


def test_random_products_match_independent_product() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        w, x = rng.normal(size=4), rng.normal(size=4)
        np.testing.assert_allclose(_layer_product(w, x), _qmul(w, x), atol=1e-12)
    # Non-commutative: the layer multiplies with the weight on the LEFT.
    w, x = rng.normal(size=4), rng.normal(size=4)
    assert not np.allclose(_layer_product(w, x), _qmul(x, w))


def test_conv_equals_sixteen_real_convolutions() -> None:
    """y = W ⊗ x spelled out as 16 real convolutions of component blocks (design.md §3)."""
    torch.manual_seed(1)
    conv = QuaternionConv2d(8, 12, 3, stride=(1, 2), padding=1, dilation=(2, 1), bias=False).double()
    x = torch.randn(2, 8, 11, 13, dtype=torch.float64)
    r, i, j, k = conv.weight.detach().unbind(0)
    xr, xi, xj, xk = x.chunk(4, dim=1)

    def c(inp: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.conv2d(inp, w, None, conv.stride, conv.padding, conv.dilation)

    yr = c(xr, r) - c(xi, i) - c(xj, j) - c(xk, k)
    yi = c(xr, i) + c(xi, r) - c(xj, k) + c(xk, j)
    yj = c(xr, j) + c(xi, k) + c(xj, r) - c(xk, i)
    yk = c(xr, k) - c(xi, j) + c(xj, i) + c(xk, r)
    expected = torch.cat([yr, yi, yj, yk], dim=1)
    torch.testing.assert_close(conv(x), expected, rtol=1e-12, atol=1e-12)


def test_conv_pixelwise_is_quaternion_product() -> None:
    """A 1×1 conv with one quaternion in and out multiplies every pixel by w on the left."""
    rng = np.random.default_rng(2)
    w = rng.normal(size=4)
    conv = QuaternionConv2d(4, 4, 1, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w).view(4, 1, 1, 1, 1))
    x = rng.normal(size=(1, 4, 3, 5))
    y = conv(torch.from_numpy(x)).detach().numpy()
    for t in range(3):
        for f in range(5):
            np.testing.assert_allclose(y[0, :, t, f], _qmul(w, x[0, :, t, f]), atol=1e-12)


def test_split_hamilton_round_trip_and_rejection() -> None:
    torch.manual_seed(3)
    comps = [torch.randn(3, 2, 3, 3, dtype=torch.float64) for _ in range(4)]
    kernel = hamilton_kernel(*comps)
    assert kernel.shape == (12, 8, 3, 3)
    for got, want in zip(split_hamilton(kernel), comps):
        torch.testing.assert_close(got, want)
    assert is_hamilton(kernel)
    broken = kernel.clone()
    broken[0, 5, 1, 1] += 0.1
    with pytest.raises(ValueError, match="Hamilton"):
        split_hamilton(broken)
    assert not is_hamilton(broken)
    assert not is_hamilton(torch.randn(8, 8, 3, 3))
    with pytest.raises(ValueError, match="divisible by 4"):
        split_hamilton(torch.randn(6, 8, 3, 3))


def test_real_weight_layout_and_parameter_count() -> None:
    conv = QuaternionConv2d(16, 32, 3)
    assert conv.weight.shape == (4, 8, 4, 3, 3)
    assert conv.real_weight().shape == (32, 16, 3, 3)
    real = torch.nn.Conv2d(16, 32, 3, bias=False)
    assert conv.weight.numel() * 4 == real.weight.numel()
    lin = QuaternionLinear(8, 12)
    assert lin.real_weight().shape == (12, 8)
    assert (lin.in_features, lin.out_features) == (8, 12)


@pytest.mark.parametrize("args", [(3, 8, 3), (8, 6, 3), (0, 8, 1)])
def test_bad_conv_channel_counts_raise(args: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        QuaternionConv2d(*args)


def test_bad_linear_features_raise() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        QuaternionLinear(8, 10)


def test_init_gives_he_variance() -> None:
    """One layer: Var(y) ≈ 2·E[x²]; a conv+ReLU stack keeps the pre-activation variance."""
    torch.manual_seed(4)
    x = torch.randn(8, 64, 24, 24)
    conv = QuaternionConv2d(64, 64, 3, padding=0, bias=False)
    with torch.no_grad():
        y = conv(x)
    assert abs(float(y.var()) / float(x.pow(2).mean()) - 2.0) < 0.3

    variances = []
    h = x
    with torch.no_grad():
        for _ in range(6):
            pre = QuaternionConv2d(64, 64, 3, padding=0, bias=False)(h)
            variances.append(float(pre.var()))
            h = F.relu(pre)
    # He scaling: neither exploding nor vanishing (each layer ×1 in expectation).
    assert 0.5 < variances[-1] / variances[0] < 2.0, variances
    assert 1.4 < variances[0] < 2.8, variances
