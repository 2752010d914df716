"""Building blocks of the PANNs-style models, real or quaternion (design.md §3, §5).

Every block takes a ``quaternion`` flag: with it, each convolution is a
:class:`qedge.nn.QuaternionConv2d` (Hamilton product, 1/4 of the parameters, the same MACs as the
real convolution of the same real width) followed by an ordinary real ``BatchNorm2d``, as in the
reference implementation. Channel counts are always REAL channel counts (multiples of 4 for
quaternion layers). Module names follow PANNs (Kong et al., 2020, ``models.py``) so state dicts
line up: ``conv1 bn1 conv2 bn2`` inside a block, ``downsample`` in residual blocks.

Blocks that end a conv with a BatchNorm list those pairs in ``conv_bn_pairs``; the folding pass
(:func:`qedge.export.fold.fold`) fuses exactly these pairs, and Conv→BN pairs inside an
``nn.Sequential``.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from qedge.nn import QuaternionConv2d, QuaternionLinear

__all__ = [
    "scale_channels",
    "make_conv",
    "make_linear",
    "pool2x2",
    "Pool2x2",
    "mel_batch_norm",
    "subtract_log_mel_mean",
    "global_pool",
    "ConvBlock",
    "ConvBlock5x5",
    "ResnetBasicBlock",
    "ResNetStack",
]


def scale_channels(channels: int, width: float) -> int:
    """Real channel count ``channels`` scaled by ``width``, kept a positive multiple of 4.

    ``4·max(1, round(channels·width/4))``: for a quaternion layer this scales the quaternion count
    (``channels/4``) and keeps real = 4 × quaternions; for a real layer it keeps widths
    compatible with the quaternion twin of the same model.
    """
    return 4 * max(1, int(round(channels * width / 4)))


def make_conv(in_channels: int, out_channels: int, kernel_size: int, quaternion: bool,
              stride: int = 1, padding: int = 0, bias: bool = False) -> nn.Module:
    """A 2D convolution: :class:`QuaternionConv2d` when ``quaternion`` else ``nn.Conv2d``.

    Real convolutions use PANNs' Xavier-uniform init; quaternion ones the quaternion He init of
    :func:`qedge.nn.quaternion_init_`.
    """
    if quaternion:
        return QuaternionConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
    nn.init.xavier_uniform_(conv.weight)
    return conv


def make_linear(in_features: int, out_features: int, quaternion: bool, bias: bool = True) -> nn.Module:
    """A fully connected layer: :class:`QuaternionLinear` when ``quaternion`` else ``nn.Linear``."""
    if quaternion:
        return QuaternionLinear(in_features, out_features, bias=bias)
    linear = nn.Linear(in_features, out_features, bias=bias)
    nn.init.xavier_uniform_(linear.weight)
    if bias:
        nn.init.zeros_(linear.bias)
    return linear


def _bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    return bn


def _at_least_two(x: torch.Tensor, dim: int) -> bool:
    if torch.jit.is_tracing():  # ONNX export: the window's size is fixed into the graph, quietly
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return bool(x.shape[dim] >= 2)
    return x.shape[dim] >= 2


def pool2x2(x: torch.Tensor) -> torch.Tensor:
    """Non-overlapping 2×2 average pooling over (time, mel), floor sizes as PANNs.

    An axis already down to one bin is left alone (kernel 1 there) so short windows and few mel
    bands run through deep stacks instead of failing.
    """
    kt = 2 if _at_least_two(x, -2) else 1
    kf = 2 if _at_least_two(x, -1) else 1
    if kt == 1 and kf == 1:
        return x
    return F.avg_pool2d(x, kernel_size=(kt, kf))


class Pool2x2(nn.Module):
    """Module form of :func:`pool2x2` (used inside ``downsample`` sequences)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool2x2(x)


def mel_batch_norm(bn0: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """PANNs ``bn0``: BatchNorm with one channel per mel bin, applied on (B, M, T, C).

    ``x`` is (B, C, T, M); the mel axis is moved to the channel axis and back.
    """
    if not torch.jit.is_tracing() and x.shape[-1] != bn0.num_features:
        raise ValueError(f"model was built for {bn0.num_features} mel bins, input has {x.shape[-1]}")
    return bn0(x.transpose(1, 3)).transpose(1, 3)


def subtract_log_mel_mean(x: torch.Tensor) -> torch.Tensor:
    """Per-window mean normalisation of the log-mel: ψ(t, m) ← ψ(t, m) − (1/T) Σ_τ ψ(τ, m).

    ``x`` is (B, 4, T, M) with ψ in component 0; Δ1–Δ3 pass unchanged (differences along time
    are already blind to a per-bin offset). A recording gain g adds 20·log10(g) dB to every ψ bin
    and a fixed microphone or room response adds a per-bin offset; both cancel here, as in
    cepstral mean normalisation of speech front ends. A projection along time: its operator norm
    is 1, so it leaves Lipschitz bounds unchanged.
    """
    # ψ's mean, zero for the other components: (B, 1, 1, M) times a one-hot (1, C, 1, 1). A masked
    # subtraction rather than a concatenation, so pruning's dependency tracing sees only
    # element-wise ops on the input.
    component0 = torch.zeros(1, x.shape[1], 1, 1, dtype=x.dtype, device=x.device)
    component0[:, 0] = 1.0
    return x - x[:, :1].mean(dim=2, keepdim=True) * component0


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """PANNs clip-level pooling of (B, C, T, M): mean over mel bins, then max + mean over time."""
    x = x.mean(dim=3)
    return x.amax(dim=2) + x.mean(dim=2)


class ConvBlock(nn.Module):
    """PANNs ``ConvBlock``: two 3×3 convolutions (no bias), each followed by BN and ReLU, then pooling."""

    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(self, in_channels: int, out_channels: int, quaternion: bool = False) -> None:
        super().__init__()
        self.conv1 = make_conv(in_channels, out_channels, 3, quaternion, padding=1)
        self.conv2 = make_conv(out_channels, out_channels, 3, quaternion, padding=1)
        self.bn1 = _bn(out_channels)
        self.bn2 = _bn(out_channels)

    def forward(self, x: torch.Tensor, pool: bool = True) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return pool2x2(x) if pool else x


class ConvBlock5x5(nn.Module):
    """PANNs ``ConvBlock5x5`` (CNN6): one 5×5 convolution (no bias), BN, ReLU, then pooling."""

    conv_bn_pairs = (("conv1", "bn1"),)

    def __init__(self, in_channels: int, out_channels: int, quaternion: bool = False) -> None:
        super().__init__()
        self.conv1 = make_conv(in_channels, out_channels, 5, quaternion, padding=2)
        self.bn1 = _bn(out_channels)

    def forward(self, x: torch.Tensor, pool: bool = True) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return pool2x2(x) if pool else x


class ResnetBasicBlock(nn.Module):
    """PANNs ``_ResnetBasicBlock``: y = ReLU(BN(conv(drop(ReLU(BN(conv(pool(x))))))) + shortcut(x)).

    Stride 2 is an average pool before ``conv1`` (not a strided conv), as in PANNs; the shortcut
    is ``downsample`` = [2×2 average pool,] 1×1 conv, BN when the shape changes, else identity.
    ``bn2`` starts at γ = 0 (zero-init residual), so each block starts as the identity.
    """

    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(self, inplanes: int, planes: int, stride: int = 1, quaternion: bool = False) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = make_conv(inplanes, planes, 3, quaternion, padding=1)
        self.bn1 = _bn(planes)
        self.conv2 = make_conv(planes, planes, 3, quaternion, padding=1)
        self.bn2 = _bn(planes)
        nn.init.zeros_(self.bn2.weight)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            layers: list[nn.Module] = [Pool2x2()] if stride == 2 else []
            layers += [make_conv(inplanes, planes, 1, quaternion), _bn(planes)]
            self.downsample = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = pool2x2(x) if self.stride == 2 else x
        out = F.relu(self.bn1(self.conv1(out)))
        out = F.dropout(out, p=0.1, training=self.training)
        out = self.bn2(self.conv2(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return F.relu(out + identity)


class ResNetStack(nn.Module):
    """PANNs ``_ResNet``: four stages ``layer1..layer4`` of basic blocks, stride 2 from stage 2 on."""

    def __init__(self, inplanes: int, planes: tuple[int, int, int, int], layers: tuple[int, int, int, int],
                 quaternion: bool = False) -> None:
        super().__init__()
        for stage, (width, count) in enumerate(zip(planes, layers), start=1):
            blocks = []
            for index in range(count):
                stride = 2 if stage > 1 and index == 0 else 1
                blocks.append(ResnetBasicBlock(inplanes, width, stride, quaternion))
                inplanes = width
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)
