"""PANNs-style audio taggers (Kong et al., 2020), real and quaternion (design.md §5).

Each model reads as in PANNs ``models.py``: ``bn0`` (BatchNorm over mel bins), a stack of blocks,
a head. Input: features ``(B, 4, T, M)`` — the quaternion ψ + ∂ψ i + ∂²ψ j + ∂³ψ k per bin
(design.md §4). Quaternion models read all four components as ONE input quaternion (4 real
channels); real baselines read component 0 (the log-mel) unless built multi-channel
(``in_components=4``: the paper's ablation, MCCNN14). Output: logits ``(B, classes)``; the
sigmoid / softmax belongs to the loss and to export.

Front: optional ``mean_norm`` (each window's mean log-mel per bin removed,
:func:`~qedge.models.blocks.subtract_log_mel_mean`: invariance to recording gain and microphone
response; parameter-free, off in the reference models), then ``bn0``.

Head (all families): mean over mel bins, max + mean over time, dropout 0.5, ``fc1`` (a
:class:`~qedge.nn.QuaternionLinear` in quaternion models), ReLU, real ``fc_audioset`` → classes.

Reference figures (527 classes, width 1; pinned by tests): CNN14 80,753,615 parameters, QCNN14
21,012,431; ResNet38 73.78 M, QResNet38 19.28 M.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qedge.models.blocks import (
    ConvBlock,
    ConvBlock5x5,
    ResNetStack,
    global_pool,
    make_linear,
    mel_batch_norm,
    pool2x2,
    scale_channels,
    subtract_log_mel_mean,
)
from qedge.nn import QuaternionConv2d

__all__ = ["PannsCnn", "Cnn6", "Cnn10", "Cnn14", "ResNet38"]


def _check_input(x: torch.Tensor, in_components: int) -> torch.Tensor:
    if torch.jit.is_tracing():  # export: the input is (batch, 4, frames, mels) by contract
        return x[:, :in_components] if in_components < 4 else x
    if x.dim() != 4 or x.shape[1] < in_components:
        raise ValueError(
            f"expected features of shape (batch, 4, frames, mels), got {tuple(x.shape)}"
        )
    return x[:, :in_components] if x.shape[1] != in_components else x


class _PannsBase(nn.Module):
    """Shared front (bn0, input selection) and head (pooling, fc1, fc_audioset)."""

    def _init_front_head(self, num_classes: int, embedding: int, quaternion: bool, in_components: int,
                         n_mels: int, mean_norm: bool) -> None:
        if quaternion and in_components != 4:
            raise ValueError("a quaternion model reads all four input components (in_components=4)")
        if in_components not in (1, 2, 3, 4):
            raise ValueError(f"in_components must be 1..4, got {in_components}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.quaternion = quaternion
        self.in_components = in_components
        self.mean_norm = bool(mean_norm)
        self.bn0 = nn.BatchNorm2d(n_mels)
        self.fc1 = make_linear(embedding, embedding, quaternion)
        self.fc_audioset = make_linear(embedding, num_classes, quaternion=False)

    def _front(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_input(x, self.in_components)
        if self.mean_norm:
            x = subtract_log_mel_mean(x)
        return mel_batch_norm(self.bn0, x)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        x = global_pool(x)
        x = F.dropout(x, p=0.5, training=self.training)
        x = F.relu(self.fc1(x))
        return self.fc_audioset(x)


class PannsCnn(_PannsBase):
    """A plain PANNs CNN: ``conv_block1..N`` with 2×2 average pooling after every block but the
    last of CNN14 (CNN6 and CNN10 pool after all four), dropout 0.2 after each block, then the head.

    ``widths`` are the real channel counts at width 1 (scaled by ``width``, see
    :func:`~qedge.models.blocks.scale_channels`); ``fc1`` is as wide as the last block.
    ``later_layers`` lists the convolutions of the last half of the blocks (CNN14: blocks 4–6,
    CNN6/CNN10: blocks 3–4), the default pruning scope (design.md §6).
    """

    block = ConvBlock
    widths: tuple[int, ...] = ()
    pool_last = True

    def __init__(self, num_classes: int = 527, width: float = 1.0, quaternion: bool = False,
                 in_components: int | None = None, n_mels: int = 64, mean_norm: bool = False) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        in_components = (4 if quaternion else 1) if in_components is None else in_components
        channels = [scale_channels(c, width) for c in self.widths]
        self._init_front_head(num_classes, channels[-1], quaternion, in_components, n_mels, mean_norm)
        in_ch = in_components
        for index, out_ch in enumerate(channels, start=1):
            setattr(self, f"conv_block{index}", self.block(in_ch, out_ch, quaternion))
            in_ch = out_ch
        self.num_blocks = len(channels)
        later = range(self.num_blocks // 2 + 1, self.num_blocks + 1)
        self.later_layers = [
            f"conv_block{b}.{conv}" for b in later for conv, _ in self.block.conv_bn_pairs
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._front(x)
        for index in range(1, self.num_blocks + 1):
            block = getattr(self, f"conv_block{index}")
            x = block(x, pool=self.pool_last or index < self.num_blocks)
            x = F.dropout(x, p=0.2, training=self.training)
        return self._head(x)


class Cnn6(PannsCnn):
    """PANNs CNN6: four blocks of one 5×5 conv, real widths 64, 128, 256, 512; fc1 512→512."""

    block = ConvBlock5x5
    widths = (64, 128, 256, 512)


class Cnn10(PannsCnn):
    """PANNs CNN10: four blocks of two 3×3 convs, real widths 64, 128, 256, 512; fc1 512→512."""

    widths = (64, 128, 256, 512)


class Cnn14(PannsCnn):
    """PANNs CNN14: six blocks of two 3×3 convs, real widths 64 … 2048 (no pooling after block 6);
    fc1 2048→2048. QCNN14 is the reference quaternion model of design.md §5."""

    widths = (64, 128, 256, 512, 1024, 2048)
    pool_last = False


class ResNet38(_PannsBase):
    """PANNs ResNet38: ``conv_block1`` (two 3×3 convs, 64) + pool, ``resnet`` = basic-block stages
    [3, 4, 6, 3] of widths 64, 128, 256, 512 (stride-2 stages start with an average pool), a 2×2
    average pool, ``conv_block_after1`` (512→2048, no pool), dropout 0.2 between them, then the head.

    ``later_layers``: every convolution of ``resnet.layer3``, ``resnet.layer4`` (including the 1×1
    shortcut convs) and ``conv_block_after1`` — the deeper half, analogous to CNN14 blocks 4–6.
    Residual partners are coupled; pruning resolves them through its dependency graph.
    """

    stages = (64, 128, 256, 512)
    layers = (3, 4, 6, 3)
    embedding = 2048

    def __init__(self, num_classes: int = 527, width: float = 1.0, quaternion: bool = False,
                 in_components: int | None = None, n_mels: int = 64, mean_norm: bool = False) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        in_components = (4 if quaternion else 1) if in_components is None else in_components
        stem = scale_channels(64, width)
        planes = tuple(scale_channels(c, width) for c in self.stages)
        embedding = scale_channels(self.embedding, width)
        self._init_front_head(num_classes, embedding, quaternion, in_components, n_mels, mean_norm)
        self.conv_block1 = ConvBlock(in_components, stem, quaternion)
        self.resnet = ResNetStack(stem, planes, self.layers, quaternion)  # type: ignore[arg-type]
        self.conv_block_after1 = ConvBlock(planes[-1], embedding, quaternion)
        self.later_layers = [
            name for name, module in self.named_modules()
            if name.startswith(("resnet.layer3.", "resnet.layer4.", "conv_block_after1."))
            and _is_conv(module)
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._front(x)
        x = self.conv_block1(x, pool=True)
        x = F.dropout(x, p=0.2, training=self.training)
        x = self.resnet(x)
        x = pool2x2(x)
        x = F.dropout(x, p=0.2, training=self.training)
        x = self.conv_block_after1(x, pool=False)
        x = F.dropout(x, p=0.2, training=self.training)
        return self._head(x)


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv2d, QuaternionConv2d))
