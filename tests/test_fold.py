"""Folding (qedge.export.fold): quaternion → real layers and Conv+BN fusion compute the same
function, on random layer configurations and on whole models of every family."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from qedge.export.fold import assert_hamilton, fold, fuse_conv_bn, to_real
from qedge.models import NAMES, build
from qedge.nn import QuaternionConv2d, QuaternionLinear


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _randomise_bn(bn: nn.BatchNorm2d, gen: torch.Generator) -> None:
    """Non-trivial running statistics and affine parameters (as after training)."""
    n = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
        bn.running_var.copy_(torch.rand(n, generator=gen) * 2 + 0.2)
        bn.weight.copy_(torch.rand(n, generator=gen) + 0.5)
        bn.bias.copy_(torch.randn(n, generator=gen) * 0.3)


def _close(y: torch.Tensor, z: torch.Tensor, rel: float = 1e-5) -> None:
    err, scale = float((y - z).abs().max()), float(y.abs().max())
    assert err <= rel * scale, f"max|Δ| = {err:.3g} > {rel} · max|y| = {rel * scale:.3g}"


CONFIGS = list(itertools.product(
    [1, 3, 5, (3, 1)],      # kernel
    [1, 2, (2, 1)],         # stride
    [0, 1, 2],              # padding
    [1, 2],                 # dilation
    [False, True],          # bias
))


@pytest.mark.parametrize("seed", range(12))
def test_fuse_quaternion_conv_bn_random_configs(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    kernel, stride, padding, dilation, bias = CONFIGS[rng.integers(len(CONFIGS))]
    cin, cout = 4 * int(rng.integers(1, 4)), 4 * int(rng.integers(1, 5))
    conv = QuaternionConv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias)
    if bias:
        with torch.no_grad():
            conv.bias.normal_(generator=gen)
    bn = nn.BatchNorm2d(cout)
    _randomise_bn(bn, gen)
    bn.eval()
    x = torch.randn(2, cin, 13 + 2 * int(rng.integers(0, 3)), 17, generator=gen)  # odd sizes

    fused = fuse_conv_bn(conv, bn)
    assert type(fused) is nn.Conv2d and fused.bias is not None
    with torch.no_grad():
        _close(bn(conv(x)), fused(x))
        _close(conv(x), to_real(conv)(x))


def test_fuse_real_grouped_conv_bn() -> None:
    gen = torch.Generator().manual_seed(7)
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=4, bias=True)
    bn = nn.BatchNorm2d(12)
    _randomise_bn(bn, gen)
    bn.eval()
    x = torch.randn(3, 8, 15, 11, generator=gen)
    with torch.no_grad():
        _close(bn(conv(x)), fuse_conv_bn(conv, bn)(x))


def test_fuse_rejects_mismatch() -> None:
    with pytest.raises(ValueError, match="channels"):
        fuse_conv_bn(nn.Conv2d(4, 8, 3), nn.BatchNorm2d(6))
    with pytest.raises(TypeError):
        fuse_conv_bn(nn.Linear(4, 4), nn.BatchNorm2d(4))


def test_linear_folds_and_keeps_hamilton_structure() -> None:
    torch.manual_seed(8)
    lin = QuaternionLinear(12, 8)
    with torch.no_grad():
        lin.bias.normal_()
    real = to_real(lin)
    assert type(real) is nn.Linear
    x = torch.randn(5, 12)
    with torch.no_grad():
        _close(lin(x), real(x))
    for got, want in zip(assert_hamilton(real), lin.weight.unbind(0)):
        torch.testing.assert_close(got, want.detach())


def test_folded_kernels_recover_components() -> None:
    model = build("qcnn10", 5, width=0.125, n_mels=16)
    plain = fold(model, fuse_bn=False)
    modules = dict(model.named_modules())
    for name, layer in plain.named_modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)) and name != "fc_audioset":
            original = modules[name]
            for got, want in zip(assert_hamilton(layer), original.weight.unbind(0)):
                torch.testing.assert_close(got, want.detach())
    # After BN fusion the per-channel scales break the structure, and the check says so.
    gen = torch.Generator().manual_seed(9)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            _randomise_bn(m, gen)
    with pytest.raises(ValueError, match="Hamilton"):
        assert_hamilton(fold(model).conv_block2.conv1)
    with pytest.raises(ValueError):
        assert_hamilton(nn.Conv2d(8, 8, 3))


def _trained_looking(name: str, seed: int, width: float = 0.125, **kwargs) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build(name, 10, width=width, **kwargs)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            _randomise_bn(m, gen)
    return model


@pytest.mark.parametrize("name", NAMES)
def test_fold_whole_models(name: str) -> None:
    model = _trained_looking(name, 10, n_mels=32)
    model.train()
    folded = fold(model)
    # No quaternion module and no BatchNorm left but bn0; the original is untouched.
    assert not any(isinstance(m, (QuaternionConv2d, QuaternionLinear)) for m in folded.modules())
    assert [n for n, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d)] == ["bn0"]
    assert model.training and not folded.training and folded.folded
    if name.startswith("q"):
        assert any(isinstance(m, QuaternionConv2d) for m in model.modules())
    assert (folded.arch, folded.arch_kwargs, folded.later_layers) == (model.arch, model.arch_kwargs, model.later_layers)
    x = torch.randn(2, 4, 101, 32) * 3 - 20
    model.eval()
    with torch.no_grad():
        _close(model(x), folded(x))


def _quaternion_features(path: Path, seconds: float = 2.0) -> torch.Tensor:
    """Log-mel + its first three time derivatives of a real recording (design.md §4), in numpy.

    Self-contained (Hann STFT, triangular mel bands, 10·log10, Savitzky–Golay derivatives over 9
    frames): the test needs realistic feature statistics, not bit-exact front-end parity.
    """
    import soundfile
    from scipy.signal import resample_poly, savgol_filter

    wave, sr = soundfile.read(path, dtype="float32", always_2d=True)
    assert sr == 44100
    wave, span = wave.mean(axis=1), int(sr * seconds)
    start = int(np.clip(np.argmax(np.abs(wave)) - span // 2, 0, max(0, len(wave) - span)))
    wave = resample_poly(wave[start:start + span], 320, 441)  # the loudest `seconds`, at 32 kHz
    n_fft, hop, n_mels = 1024, 320, 64
    padded = np.pad(wave, n_fft // 2, mode="reflect")
    count = 1 + (len(padded) - n_fft) // hop
    frames = np.stack([padded[t * hop:t * hop + n_fft] for t in range(count)]) * np.hanning(n_fft + 1)[:-1]
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges = 700 * (10 ** (np.linspace(mel(50.0), mel(14000.0), n_mels + 2) / 2595) - 1)
    freqs = np.fft.rfftfreq(n_fft, 1 / 32000)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bank = np.maximum(0, np.minimum((freqs - lower) / (centre - lower), (upper - freqs) / (upper - centre)))
    logmel = 10 * np.log10(np.maximum(power @ bank.T, 1e-10))  # (frames, mels)
    comps = [logmel] + [savgol_filter(logmel, 9, polyorder=k, deriv=k, axis=0, mode="interp") for k in (1, 2, 3)]
    return torch.from_numpy(np.stack(comps)[None].astype(np.float32))


def test_fold_on_real_recording(esc10_root: Path) -> None:
    clip = sorted((esc10_root / "001 - Dog bark").glob("*.ogg"))[0]
    x = _quaternion_features(clip)
    assert x.shape[:2] == (1, 4) and x.shape[-1] == 64
    assert float(x[0, 0].std()) > 1.0  # a real, non-silent excerpt
    model = _trained_looking("qcnn14", 11, width=0.25).eval()
    folded = fold(model)
    with torch.no_grad():
        _close(model(x), folded(x))


def test_fold_after_pruning_like_surgery() -> None:
    """Fold reads shapes from tensors: a model whose quaternion filters were cut still folds."""
    model = _trained_looking("qcnn6", 12, width=0.25, n_mels=16).eval()
    keep = torch.tensor([0, 2])  # keep 2 of the 4 quaternion filters of block 1
    block, nxt = model.conv_block1, model.conv_block2
    real_keep = torch.cat([keep + q * block.conv1.weight.shape[1] for q in range(4)])
    with torch.no_grad():
        block.conv1.weight = nn.Parameter(block.conv1.weight[:, keep].clone())
        nxt.conv1.weight = nn.Parameter(nxt.conv1.weight[:, :, keep].clone())
        bn = nn.BatchNorm2d(len(real_keep)).eval()
        for attr in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn, attr).copy_(getattr(block.bn1, attr)[real_keep])
        block.bn1 = bn
    x = torch.randn(1, 4, 40, 16)
    with torch.no_grad():
        _close(model(x), fold(model)(x))
