"""Quaternion layers: the one place where the Hamilton-product kernel is assembled.

A quaternion feature map with Q quaternion channels is a real tensor of C = 4Q channels laid out
component-major, ``[R-block | I-block | J-block | K-block]`` (design.md §3). A quaternion layer holds
four real component kernels R, I, J, K and computes the Hamilton product with the weight on the
left, y = W ⊗ x, as ONE real operation with the assembled kernel (design.md §3)::

          [ R  -I  -J  -K ]        y_r = R x_r − I x_i − J x_j − K x_k
      W = [ I   R  -K   J ]        y_i = I x_r + R x_i − K x_j + J x_k
          [ J   K   R  -I ]        y_j = J x_r + K x_i + R x_j − I x_k
          [ K  -J   I   R ]        y_k = K x_r − J x_i + I x_j + R x_k

:func:`hamilton_kernel` builds that matrix, :func:`split_hamilton` recovers R, I, J, K from it (and
checks the structure). Everything else (layers, folding, export, spectral tools) calls these two.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "hamilton_kernel",
    "split_hamilton",
    "is_hamilton",
    "quaternion_init_",
    "QuaternionConv2d",
    "QuaternionLinear",
]


def hamilton_kernel(r: torch.Tensor, i: torch.Tensor, j: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Assemble the real kernel of the left Hamilton product W ⊗ x (design.md §3).

    Each component has shape ``(O, I, *spatial)``; the result has shape ``(4O, 4I, *spatial)``,
    rows grouped by output component (r, i, j, k) and columns by input component (r, i, j, k).
    """
    row_r = torch.cat([r, -i, -j, -k], dim=1)
    row_i = torch.cat([i, r, -k, j], dim=1)
    row_j = torch.cat([j, k, r, -i], dim=1)
    row_k = torch.cat([k, -j, i, r], dim=1)
    return torch.cat([row_r, row_i, row_j, row_k], dim=0)


def split_hamilton(kernel: torch.Tensor, atol: float = 1e-6) -> tuple[torch.Tensor, ...]:
    """Recover (R, I, J, K) from a real kernel of Hamilton structure; raise if it has none.

    Each component is the average of its four signed occurrences in the matrix of
    :func:`hamilton_kernel`; the kernel is then re-assembled and compared (max |Δ| ≤ atol ·
    max(1, max |kernel|)), so a kernel that is not a left Hamilton product is reported.
    """
    kernel = kernel.detach()
    out4, in4 = kernel.shape[0], kernel.shape[1]
    if out4 % 4 or in4 % 4:
        raise ValueError(f"a Hamilton kernel needs channel counts divisible by 4, got {tuple(kernel.shape)}")
    o, c = out4 // 4, in4 // 4

    def block(row: int, col: int) -> torch.Tensor:
        return kernel[row * o:(row + 1) * o, col * c:(col + 1) * c]

    r = (block(0, 0) + block(1, 1) + block(2, 2) + block(3, 3)) / 4
    i = (-block(0, 1) + block(1, 0) - block(2, 3) + block(3, 2)) / 4
    j = (-block(0, 2) + block(1, 3) + block(2, 0) - block(3, 1)) / 4
    k = (-block(0, 3) - block(1, 2) + block(2, 1) + block(3, 0)) / 4
    rebuilt = hamilton_kernel(r, i, j, k)
    scale = max(1.0, float(kernel.abs().max()))
    err = float((rebuilt - kernel).abs().max())
    if err > atol * scale:
        raise ValueError(f"kernel has no Hamilton structure (max deviation {err:.3g})")
    return r, i, j, k


def is_hamilton(kernel: torch.Tensor, atol: float = 1e-6) -> bool:
    """True when ``kernel`` is the real matrix of a left Hamilton product (see :func:`split_hamilton`)."""
    try:
        split_hamilton(kernel, atol)
    except ValueError:
        return False
    return True


def quaternion_init_(weight: torch.Tensor, fan_in: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Quaternion He initialisation (Parcollet et al., "Quaternion recurrent neural networks", 2019).

    Each quaternion weight w = |w| (cos θ + u sin θ) with modulus |w| ~ σ·χ(4), phase θ ~ U(−π, π)
    and a uniformly random unit pure axis u. With σ = 1/√(2·fan_in) (fan_in counted in quaternion
    inputs × kernel taps), E|w|² = 4σ², so each real output component has variance
    4σ²·fan_in·Var(x) = 2·Var(x): the He criterion for ReLU networks. Drawing the four components
    independently (as a real init would) ignores that they act together in the Hamilton product
    and mis-scales the output variance by the 4× weight sharing.

    ``weight`` has shape ``(4, ...)`` (component first) and is filled in place.
    """
    shape = weight.shape[1:]
    sigma = 1.0 / math.sqrt(2.0 * fan_in)
    with torch.no_grad():
        normals = torch.randn((4, *shape), generator=generator)
        modulus = normals.norm(dim=0) * sigma  # chi distribution with 4 degrees of freedom
        phase = (torch.rand(shape, generator=generator) * 2 - 1) * math.pi
        axis = torch.randn((3, *shape), generator=generator)
        axis = axis / axis.norm(dim=0).clamp_min(1e-12)
        weight[0].copy_(modulus * torch.cos(phase))
        weight[1:].copy_(modulus * torch.sin(phase) * axis)
    return weight


def _check_quaternion_channels(name: str, value: int) -> int:
    if value <= 0 or value % 4:
        raise ValueError(f"{name} must be a positive multiple of 4 (one quaternion = 4 real channels), got {value}")
    return value // 4


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


class QuaternionConv2d(nn.Module):
    """2D quaternion convolution y = W ⊗ x, computed as one real convolution (design.md §3).

    Same signature as :class:`torch.nn.Conv2d`, channel counts in real channels (multiples of 4).
    Parameters: ``weight`` of shape ``(4, out/4, in/4, kh, kw)`` holding R, I, J, K (exposed as
    ``.r``, ``.i``, ``.j``, ``.k``) and an optional real ``bias`` of ``out_channels``. Channel
    counts are derived from the weight, so structured pruning only has to cut tensors.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        q_in = _check_quaternion_channels("in_channels", in_channels)
        q_out = _check_quaternion_channels("out_channels", out_channels)
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.weight = nn.Parameter(torch.empty(4, q_out, q_in, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.reset_parameters()

    @property
    def in_channels(self) -> int:
        return 4 * self.weight.shape[2]

    @property
    def out_channels(self) -> int:
        return 4 * self.weight.shape[1]

    r = property(lambda self: self.weight[0])
    i = property(lambda self: self.weight[1])
    j = property(lambda self: self.weight[2])
    k = property(lambda self: self.weight[3])

    def reset_parameters(self) -> None:
        fan_in = self.weight.shape[2] * self.kernel_size[0] * self.kernel_size[1]
        quaternion_init_(self.weight, fan_in)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def real_weight(self) -> torch.Tensor:
        """The assembled real kernel ``(out_channels, in_channels, kh, kw)``."""
        return hamilton_kernel(*self.weight.unbind(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.real_weight(), self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding}")
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        return s + ("" if self.bias is not None else ", bias=False")


class QuaternionLinear(nn.Module):
    """Quaternion fully connected layer y = W ⊗ x, one real matmul with the assembled matrix.

    ``weight`` has shape ``(4, out/4, in/4)``; ``bias`` is a real vector of ``out_features``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        q_in = _check_quaternion_channels("in_features", in_features)
        q_out = _check_quaternion_channels("out_features", out_features)
        self.weight = nn.Parameter(torch.empty(4, q_out, q_in))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.reset_parameters()

    @property
    def in_features(self) -> int:
        return 4 * self.weight.shape[2]

    @property
    def out_features(self) -> int:
        return 4 * self.weight.shape[1]

    r = property(lambda self: self.weight[0])
    i = property(lambda self: self.weight[1])
    j = property(lambda self: self.weight[2])
    k = property(lambda self: self.weight[3])

    def reset_parameters(self) -> None:
        quaternion_init_(self.weight, self.weight.shape[2])
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def real_weight(self) -> torch.Tensor:
        """The assembled real matrix ``(out_features, in_features)``."""
        return hamilton_kernel(*self.weight.unbind(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.real_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
