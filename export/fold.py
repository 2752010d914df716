"""Folding: quaternion layers → plain real layers, BatchNorm fused into the preceding convolution.

A quaternion convolution y = W ⊗ x is one real convolution with the assembled Hamilton kernel
(design.md §3, :func:`qedge.nn.hamilton_kernel`), so it is replaced by an ``nn.Conv2d`` holding
that kernel (``QuaternionLinear`` → ``nn.Linear`` likewise). In eval mode a BatchNorm that follows
a convolution is the per-channel affine map BN(z) = γ (z − μ) / √(σ² + ε) + β, so it fuses into
the convolution:

    W' = W · s,   b' = (b − μ) · s + β,   s = γ / √(σ² + ε)   (per output channel).

The folded model computes the same function with standard operators only (Conv, Gemm), as the
deployment formats want. Which BatchNorms are fused is read from the model's structure, never
guessed from module order: the ``conv_bn_pairs`` each block declares (``(("conv1", "bn1"), …)``,
see :mod:`qedge.models.blocks`), and a convolution immediately followed by a BatchNorm inside an
``nn.Sequential`` (residual shortcuts). Fused BatchNorms become ``nn.Identity``.

``bn0`` (PANNs' BatchNorm over mel bins) is left as an eval-mode ``BatchNorm2d``: it normalises
the mel axis, which the first convolution slides over, so it cannot be fused into that kernel
exactly (a per-mel-bin scale is not shift invariant, and zero padding sees the un-normalised
border); it exports as one standard BatchNormalization between two transposes.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from qedge.errors import QedgeError
from qedge.nn import QuaternionConv2d, QuaternionLinear, split_hamilton

__all__ = ["fold", "fuse_conv_bn", "to_real", "assert_hamilton"]

_CONV = (nn.Conv2d, QuaternionConv2d)


def to_real(module: nn.Module) -> nn.Module:
    """The real ``nn.Conv2d`` / ``nn.Linear`` computing the same map as a quaternion layer.

    Other modules are returned unchanged. The weight is the assembled Hamilton kernel
    (``module.real_weight()``), the bias is copied.
    """
    if isinstance(module, QuaternionConv2d):
        weight = module.real_weight().detach()
        conv = nn.Conv2d(
            module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
            padding=module.padding, dilation=module.dilation, bias=module.bias is not None,
            device=weight.device, dtype=weight.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(weight)
            if module.bias is not None:
                conv.bias.copy_(module.bias.detach())
        return conv
    if isinstance(module, QuaternionLinear):
        weight = module.real_weight().detach()
        linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                           device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if module.bias is not None:
                linear.bias.copy_(module.bias.detach())
        return linear
    return module


def fuse_conv_bn(conv: nn.Module, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One ``nn.Conv2d`` equal to ``bn(conv(x))`` with ``bn`` in eval mode (running statistics).

    ``conv`` is an ``nn.Conv2d`` or a :class:`~qedge.nn.QuaternionConv2d` (folded first). The
    arithmetic runs in float64 and is cast back to the layer's dtype.
    """
    real = to_real(conv)
    if not isinstance(real, nn.Conv2d):
        raise TypeError(f"fuse_conv_bn needs a convolution, got {type(conv).__name__}")
    if not isinstance(bn, nn.BatchNorm2d):
        raise TypeError(f"fuse_conv_bn needs a BatchNorm2d, got {type(bn).__name__}")
    if bn.num_features != real.out_channels:
        raise ValueError(f"BatchNorm has {bn.num_features} channels, the convolution {real.out_channels}")
    if bn.running_mean is None or bn.running_var is None:
        raise QedgeError("cannot fuse a BatchNorm without running statistics (track_running_stats=False)")
    dtype = real.weight.dtype
    mean = bn.running_mean.detach().double()
    var = bn.running_var.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = real.bias.detach().double() if real.bias is not None else torch.zeros_like(mean)
    fused = nn.Conv2d(
        real.in_channels, real.out_channels, real.kernel_size, stride=real.stride, padding=real.padding,
        dilation=real.dilation, groups=real.groups, bias=True, padding_mode=real.padding_mode,
        device=real.weight.device, dtype=dtype,
    )
    with torch.no_grad():
        shape = (-1,) + (1,) * (real.weight.dim() - 1)
        fused.weight.copy_((real.weight.detach().double() * scale.view(shape)).to(dtype))
        fused.bias.copy_(((bias - mean) * scale + beta).to(dtype))
    return fused


def _fuse_declared(module: nn.Module) -> None:
    for conv_name, bn_name in getattr(module, "conv_bn_pairs", ()):
        conv = getattr(module, conv_name, None)
        bn = getattr(module, bn_name, None)
        if isinstance(conv, _CONV) and isinstance(bn, nn.BatchNorm2d):
            setattr(module, conv_name, fuse_conv_bn(conv, bn))
            setattr(module, bn_name, nn.Identity())


def _fuse_sequential(seq: nn.Sequential) -> None:
    items = list(seq._modules.items())
    for (conv_key, conv), (bn_key, bn) in zip(items, items[1:]):
        if isinstance(conv, _CONV) and isinstance(bn, nn.BatchNorm2d):
            seq._modules[conv_key] = fuse_conv_bn(conv, bn)
            seq._modules[bn_key] = nn.Identity()


def fold(model: nn.Module, fuse_bn: bool = True) -> nn.Module:
    """An eval-mode deep copy of ``model`` with no quaternion module left and BN fused.

    Every :class:`~qedge.nn.QuaternionConv2d` becomes an ``nn.Conv2d`` and every
    :class:`~qedge.nn.QuaternionLinear` an ``nn.Linear`` with the assembled kernel; with
    ``fuse_bn`` every BatchNorm that directly follows a convolution in the model's structure (see
    the module docstring) is fused into it. ``model`` itself is not modified. Attributes such as
    ``arch``, ``arch_kwargs`` and ``later_layers`` travel with the copy; ``folded`` is set True.
    """
    folded = copy.deepcopy(model).eval()
    if fuse_bn:
        for module in list(folded.modules()):
            _fuse_declared(module)
            if isinstance(module, nn.Sequential):
                _fuse_sequential(module)
    for module in list(folded.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, (QuaternionConv2d, QuaternionLinear)):
                setattr(module, name, to_real(child))
    folded.folded = True
    return folded.eval()


def assert_hamilton(layer: nn.Module, atol: float = 1e-6) -> tuple[torch.Tensor, ...]:
    """Check that a (folded, un-fused) real layer holds a Hamilton kernel; return (R, I, J, K).

    ``layer`` is an ``nn.Conv2d`` / ``nn.Linear`` (or a quaternion layer, checked on its
    assembled kernel). Raises ``ValueError`` when the kernel is not a left Hamilton product
    (design.md §3), via :func:`qedge.nn.split_hamilton`. A BN-fused kernel generally is not: the
    BN scale differs per real channel.
    """
    if isinstance(layer, (QuaternionConv2d, QuaternionLinear)):
        weight = layer.real_weight()
    elif isinstance(layer, (nn.Conv2d, nn.Linear)):
        if isinstance(layer, nn.Conv2d) and layer.groups != 1:
            raise ValueError("a grouped convolution has no Hamilton kernel")
        weight = layer.weight
    else:
        raise ValueError(f"{type(layer).__name__} has no kernel to check")
    return split_hamilton(weight.detach(), atol)
