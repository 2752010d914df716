"""Lipschitz bounds of whole networks, per-layer input sizes and model-wide clipping (design.md §7)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qedge.errors import QedgeError
from qedge.models import NAMES, build
from qedge.nn import QuaternionConv2d, QuaternionLinear
from qedge.spectral import clip_model_, input_sizes, lipschitz_report, padded_grid, spectral_norm

SHAPE = (1, 4, 16, 16)


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics (ResNet blocks start with γ = 0, which would hide the residual branch)."""
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.weight.data = torch.rand(mod.weight.shape, generator=g) + 0.5
            mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) * 1.5 + 0.5)
            mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g))
    return model.eval()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def local_lipschitz(model: nn.Module, x: torch.Tensor, iters: int = 6) -> float:
    """A LOWER estimate of the Lipschitz constant: power iteration on JᵀJ at x (Jv by a finite
    difference, Jᵀu by backprop), reported as the secant ratio ‖f(x + εv) − f(x)‖ / ‖εv‖ — any such
    ratio is ≤ the true constant, whatever the nonlinearities (ReLU, max)."""
    x = x.double().requires_grad_(True)
    y = model(x)
    eps = 1e-4 * float(x.detach().norm())
    v = torch.randn_like(x)
    v /= v.norm()
    ratio = 0.0
    for _ in range(iters):
        with torch.no_grad():
            u = model(x + eps * v) - y
        ratio = max(ratio, float(u.norm()) / eps)
        (g,) = torch.autograd.grad(y, x, u, retain_graph=True)
        v = g / g.norm()
    with torch.no_grad():
        ratio = max(ratio, float((model(x + eps * v) - y).norm()) / eps)
    return ratio


@pytest.mark.parametrize("name", NAMES)
def test_bound_exceeds_local_estimates_for_every_family(name: str) -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(build(name, 3, width=0.125, n_mels=SHAPE[-1])).double()
    report = lipschitz_report(model, SHAPE)
    assert model.training is False
    assert np.isfinite(report.bound) and report.bound > 0
    estimates = [local_lipschitz(model, torch.randn(SHAPE) * 3)]
    assert max(estimates) > 0
    assert report.bound >= max(estimates) * (1 + 1e-4)
    rows = report.rows
    assert {"layer", "input_size", "sigma_max", "bn_factor", "factor", "cumulative"} <= set(rows[0])
    assert rows[-1]["cumulative"] == pytest.approx(report.bound)
    convs = [r for r in rows if r["input_size"] is not None]
    n_convs = sum(isinstance(m, (nn.Conv2d, QuaternionConv2d)) for m in model.modules())
    assert len(convs) == n_convs
    assert all(r["bn_factor"] is not None for r in convs)  # every conv is followed by its BN
    assert rows[0]["layer"] == "bn0"  # the mel-bin BatchNorm comes first


def test_conv_rows_bound_the_actual_zero_padded_layers() -> None:
    """Each conv row's σ_max ≥ the true norm of the layer as it runs (zero padding, its input size),
    measured by power iteration on the layer itself."""
    torch.manual_seed(1)
    model = randomize_batchnorm(build("qcnn10", 3, width=0.125, n_mels=16))
    report = lipschitz_report(model, SHAPE)
    modules = dict(model.named_modules())
    for row in report.rows:
        if row["input_size"] is None:
            continue
        layer = modules[row["layer"]]
        x = torch.randn(1, layer.in_channels, *row["input_size"])
        for _ in range(30):
            x = torch.nn.grad.conv2d_input(x.shape, layer.real_weight(), layer(x).detach(), padding=layer.padding)
            x = x / x.norm()
        true = float(layer(x).detach().norm())
        assert true <= row["sigma_max"] * (1 + 1e-5)
        assert row["sigma_max"] == pytest.approx(spectral_norm(layer, padded_grid(row["input_size"], (3, 3))))


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = QuaternionConv2d(4, 4, 3, padding=1, bias=False)
        self.fc = QuaternionLinear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.conv(x)
        y = F.avg_pool2d(y, 2)
        return self.fc(y.mean(dim=(2, 3)))


def test_residual_and_pooling_factors() -> None:
    torch.manual_seed(4)
    model = _Residual().double()
    report = lipschitz_report(model, (1, 4, 8, 8))
    sigma = spectral_norm(model.conv, (10, 10))
    fc = float(np.linalg.norm(model.fc.real_weight().detach().numpy(), 2))
    # (1 + σ) · 1/2 (2×2 average pool) · 1/4 (mean over 16 values) · ‖fc‖
    assert report.bound == pytest.approx((1 + sigma) * 0.5 * 0.25 * fc, rel=1e-6)
    assert report.bound >= local_lipschitz(model, torch.randn(1, 4, 8, 8))


def test_unsupported_operations_are_reported() -> None:
    class Square(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * x

    with pytest.raises(QedgeError, match="unsupported operation 'mul'"):
        lipschitz_report(Square(), (1, 4, 4, 4))


def test_input_sizes_and_clip_model() -> None:
    torch.manual_seed(6)
    model = build("qcnn6", 3, width=0.125, n_mels=16)
    model.train()
    sizes = input_sizes(model, (2, 4, 20, 16))
    assert model.training  # mode restored
    assert sizes == {"conv_block1.conv1": (20, 16), "conv_block2.conv1": (10, 8),
                     "conv_block3.conv1": (5, 4), "conv_block4.conv1": (2, 2)}
    before = {n: spectral_norm(m, padded_grid(sizes[n], m.kernel_size)) for n, m in model.named_modules() if n in sizes}
    c = 0.5 * min(before.values())
    result = clip_model_(model, c, sizes)
    assert set(result) == set(sizes)
    for name, mod in model.named_modules():
        if name in sizes:
            grid = padded_grid(sizes[name], mod.kernel_size)
            assert spectral_norm(mod, grid) <= c * (1 + 1e-3) * (1 + 1e-6)
            assert result[name] <= c * (1 + 1e-3)
    # the bound of the clipped network shrinks accordingly
    assert lipschitz_report(randomize_batchnorm(model), (1, 4, 20, 16)).bound > 0
