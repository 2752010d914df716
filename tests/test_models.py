"""Model registry (qedge.models): parameter pins, forward shapes of every family, width scaling,
rebuild from .arch/.arch_kwargs, pruning scope names, input handling and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qedge.errors import QedgeError
from qedge.models import NAMES, build, is_quaternion
from qedge.nn import QuaternionConv2d, QuaternionLinear


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _meta_params(name: str, **kwargs) -> int:
    with torch.device("meta"):
        model = build(name, 527, **kwargs)
    return sum(p.numel() for p in model.parameters())


def _convs(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, QuaternionConv2d))]


def test_registry_names() -> None:
    assert set(NAMES) == {"cnn6", "cnn10", "cnn14", "resnet38", "qcnn6", "qcnn10", "qcnn14", "qresnet38", "mccnn6",
                          "mccnn10", "mccnn14"}
    assert is_quaternion("qcnn14") and not is_quaternion("cnn14") and not is_quaternion("mccnn14")


def test_parameter_pins_cnn14_family() -> None:
    assert _meta_params("cnn14") == 80_753_615
    assert _meta_params("qcnn14") == 21_012_431
    # MCCNN14: only the first conv reads 3 more input channels (3 × 64 × 3 × 3 weights).
    assert _meta_params("mccnn14") == 80_753_615 + 3 * 64 * 9
    assert _meta_params("mccnn6") == _meta_params("cnn6") + 3 * 64 * 5 * 5  # CNN6's first conv is 5 × 5


def test_parameter_pins_resnet38_family() -> None:
    assert abs(_meta_params("resnet38") / 73.78e6 - 1) < 1e-3
    assert abs(_meta_params("qresnet38") / 19.28e6 - 1) < 1e-3


def test_qcnn14_structure_follows_panns() -> None:
    with torch.device("meta"):
        model = build("qcnn14", 527)
    widths = [getattr(model, f"conv_block{b}").conv2.out_channels for b in range(1, 7)]
    assert widths == [64, 128, 256, 512, 1024, 2048]
    assert model.conv_block1.conv1.weight.shape == (4, 16, 1, 3, 3)  # one input quaternion
    assert isinstance(model.fc1, QuaternionLinear) and model.fc1.in_features == 2048
    assert type(model.fc_audioset) is nn.Linear and model.fc_audioset.out_features == 527
    assert model.bn0.num_features == 64
    keys = set(model.state_dict())
    for key in ("bn0.running_mean", "conv_block1.conv1.weight", "conv_block6.bn2.running_var",
                "fc1.weight", "fc_audioset.bias"):
        assert key in keys
    assert all(m.bias is None for _, m in _convs(model))


@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes_short_input(name: str) -> None:
    torch.manual_seed(0)
    model = build(name, 10, width=0.125, n_mels=16).eval()
    x = torch.randn(2, 4, 64, 16)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 10)
    assert torch.isfinite(y).all()
    # Tiny windows and the default 64 mels also run (pooling stops at one bin).
    tiny = build(name, 3, width=0.125).eval()
    with torch.no_grad():
        assert tiny(torch.randn(1, 4, 5, 64)).shape == (1, 3)
        assert model(torch.randn(1, 4, 101, 16)).shape == (1, 10)


def test_quaternion_models_have_no_real_conv_and_real_models_no_quaternion() -> None:
    for name in NAMES:
        model = build(name, 5, width=0.125)
        kinds = {type(m) for _, m in _convs(model)}
        assert kinds == ({QuaternionConv2d} if is_quaternion(name) else {nn.Conv2d}), name


def test_input_components() -> None:
    """Real baselines read the log-mel component only; quaternion and MC models read all four."""
    torch.manual_seed(1)
    x = torch.randn(1, 4, 64, 32)
    x2 = x.clone()
    x2[:, 1:] = torch.randn(1, 3, 64, 32)
    for name, reads_all in [("cnn10", False), ("qcnn10", True), ("mccnn14", True), ("resnet38", False)]:
        model = build(name, 4, width=0.125, n_mels=32).eval()
        with torch.no_grad():
            same = torch.allclose(model(x), model(x2))
        assert same != reads_all, name


@pytest.mark.parametrize("width", [0.1, 0.25, 0.3, 0.5, 1.0])
def test_width_scaling_multiple_of_four(width: float) -> None:
    with torch.device("meta"):
        q = build("qcnn14", 10, width=width)
        r = build("cnn14", 10, width=width)
    base = [64, 128, 256, 512, 1024, 2048]
    q_widths = [getattr(q, f"conv_block{b}").conv1.out_channels for b in range(1, 7)]
    r_widths = [getattr(r, f"conv_block{b}").conv1.out_channels for b in range(1, 7)]
    assert q_widths == r_widths
    for got, full in zip(q_widths, base):
        assert got % 4 == 0 and got >= 4
        assert got == 4 * max(1, round(full / 4 * width))  # quaternion count scaled, real = 4×
    assert q_widths == sorted(q_widths)
    assert q.fc1.in_features == q_widths[-1]


def test_width_shrinks_parameters_quadratically() -> None:
    full = _meta_params("qcnn14")
    half = _meta_params("qcnn14", width=0.5)
    # Conv and fc1 weights scale with width², the classifier with width.
    assert 0.24 < half / full < 0.32


@pytest.mark.parametrize("name", ["qcnn14", "cnn6", "qresnet38", "mccnn14"])
def test_rebuild_from_arch(name: str) -> None:
    model = build(name, 7, width=0.25, n_mels=32)
    assert model.arch == name
    assert model.arch_kwargs == {"num_classes": 7, "width": 0.25, "n_mels": 32}
    again = build(model.arch, **model.arch_kwargs)
    again.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(1, 4, 40, 32)
    model.eval(), again.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), again(x))


def test_later_layers() -> None:
    with torch.device("meta"):
        q14 = build("qcnn14", 527)
    assert q14.later_layers == [f"conv_block{b}.conv{c}" for b in (4, 5, 6) for c in (1, 2)]
    for name in NAMES:
        model = build(name, 5, width=0.125)
        assert model.later_layers, name
        modules = dict(model.named_modules())
        for layer in model.later_layers:
            assert isinstance(modules[layer], (nn.Conv2d, QuaternionConv2d)), (name, layer)
    q6 = build("qcnn6", 5, width=0.125)
    assert q6.later_layers == ["conv_block3.conv1", "conv_block4.conv1"]
    res = build("qresnet38", 5, width=0.125)
    assert all(n.startswith(("resnet.layer3.", "resnet.layer4.", "conv_block_after1.")) for n in res.later_layers)
    assert "conv_block_after1.conv2" in res.later_layers and "resnet.layer4.0.downsample.1" in res.later_layers


def test_dropout_only_in_training_and_gradients_flow() -> None:
    torch.manual_seed(2)
    model = build("qcnn10", 4, width=0.125, n_mels=16)
    x = torch.randn(3, 4, 50, 16)
    model.train()
    y1, y2 = model(x), model(x)
    assert not torch.allclose(y1, y2)
    y1.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))


def test_resnet_blocks_start_as_identity() -> None:
    """Zero-init residual (PANNs): with γ₂ = 0 a basic block without shortcut conv is ReLU(x)."""
    model = build("qresnet38", 5, width=0.125).eval()
    block = model.resnet.layer1[1]
    x = torch.randn(1, block.conv1.in_channels, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.relu(x))


def test_bad_arguments() -> None:
    with pytest.raises(QedgeError, match="unknown model architecture 'vgg'"):
        build("vgg", 10)
    with pytest.raises(QedgeError, match="width"):
        build("qcnn14", 10, width=0)
    with pytest.raises(QedgeError, match="num_classes"):
        build("cnn6", 0)
    with pytest.raises(QedgeError, match="unknown option"):
        build("cnn6", 5, colour="red")
    model = build("cnn6", 5, width=0.125).eval()
    with pytest.raises(ValueError, match="64 mel bins"):
        model(torch.randn(1, 4, 20, 32))
    with pytest.raises(ValueError, match="expected features"):
        model(torch.randn(20, 64))


def test_mean_norm_makes_the_model_blind_to_recording_gain(esc10_root) -> None:
    """With mean_norm, a louder recording (gain 3 = +9.5 dB on every log-mel bin) gives the same
    logits; without it, the same weights give different logits."""
    import numpy as np

    from qedge.runtime.audio import load_audio
    from qedge.runtime.features import FeatureConfig, LogMelDeltas

    clip = sorted((esc10_root / "007 - Helicopter").glob("*.ogg"))[0]
    wave = load_audio(clip, 32000)[32000:64000]  # one second, no digital silence (no bin at the floor)
    extractor = LogMelDeltas(FeatureConfig())
    quiet = torch.from_numpy(extractor.compute(wave)[None])
    loud = torch.from_numpy(extractor.compute(np.float32(3.0) * wave)[None])
    assert float((loud[0, 0] - quiet[0, 0]).median()) == pytest.approx(20 * np.log10(3.0), abs=1e-3)

    torch.manual_seed(0)
    normed = build("qcnn6", 10, width=0.25, mean_norm=True).eval()
    plain = build("qcnn6", 10, width=0.25).eval()
    plain.load_state_dict(normed.state_dict(), strict=True)  # parameter-free: same weights fit both
    with torch.no_grad():
        torch.testing.assert_close(normed(loud), normed(quiet), rtol=1e-4, atol=1e-4)
        assert float((plain(loud) - plain(quiet)).abs().max()) > 1e-2


def test_mean_norm_is_recorded_in_arch_kwargs() -> None:
    model = build("qcnn6", 10, width=0.25, n_mels=32, mean_norm=True)
    assert model.arch_kwargs == {"num_classes": 10, "width": 0.25, "n_mels": 32, "mean_norm": True}
    assert build(model.arch, **model.arch_kwargs).mean_norm is True
    assert "mean_norm" not in build("qcnn6", 10, mean_norm=False).arch_kwargs  # the default, as older files
    with pytest.raises(QedgeError, match="mean_norm must be true or false"):
        build("qcnn6", 10, mean_norm="yes")
