"""The MAC / parameter counter (qedge.profile): PANNs backbone figures, per-layer rows against an
independent formula, model == fold MACs, meta pass == real pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import qedge.profile as profile_mod
from qedge.export.fold import fold
from qedge.models import NAMES, build
from qedge.nn import QuaternionConv2d
from qedge.profile import count_params, profile


pytestmark = pytest.mark.usefixtures("one_torch_thread")

FRAMES, MELS = 1001, 64


def _cnn14_backbone_macs(in_channels: int) -> int:
    """Independent count: six blocks of two 3×3 convs, 2×2 floor pooling after blocks 1–5."""
    widths = [64, 128, 256, 512, 1024, 2048]
    t, m, c_in, total = FRAMES, MELS, in_channels, 0
    for block, c_out in enumerate(widths, start=1):
        total += (c_in * c_out * 9 + c_out * c_out * 9) * t * m
        c_in = c_out
        if block < 6:
            t, m = t // 2, m // 2
    return total


@pytest.fixture(scope="module")
def full_profiles() -> dict[str, profile_mod.Profile]:
    out = {}
    for name in ("cnn14", "qcnn14"):
        with torch.device("meta"):
            model = build(name, 527)
        out[name] = profile(model, (1, 4, FRAMES, MELS))
    return out


def test_cnn14_backbone_macs(full_profiles) -> None:
    prof = full_profiles["cnn14"]
    assert prof.backbone_macs == _cnn14_backbone_macs(1)
    assert abs(prof.backbone_macs / 20.04e9 - 1) < 0.02
    head = 2048 * 2048 + 2048 * 527
    assert prof.macs == prof.backbone_macs + head
    assert prof.params == 80_753_615


def test_qcnn14_backbone_macs(full_profiles) -> None:
    prof = full_profiles["qcnn14"]
    assert prof.backbone_macs == _cnn14_backbone_macs(4)
    assert abs(prof.backbone_macs / 20.15e9 - 1) < 0.02
    assert abs(prof.macs / 20.15e9 - 1) < 0.02
    # The only difference to CNN14: the first conv reads 4 input channels instead of 1.
    assert prof.backbone_macs - full_profiles["cnn14"].backbone_macs == 3 * 64 * 9 * FRAMES * MELS
    assert prof.params == 21_012_431


def test_rows_follow_execution_and_shapes(full_profiles) -> None:
    rows = full_profiles["qcnn14"].layers
    assert [r.name for r in rows[:2]] == ["conv_block1.conv1", "conv_block1.conv2"]
    assert rows[-1].name == "fc_audioset" and rows[-1].out_shape == (1, 527)
    assert rows[0].out_shape == (1, 64, FRAMES, MELS)
    assert rows[-3].name == "conv_block6.conv2" and rows[-3].out_shape == (1, 2048, 31, 2)
    assert rows[0].type == "QuaternionConv2d" and rows[0].params == 4 * 16 * 1 * 9
    # + two BatchNorms (γ, β) per block and bn0 (γ, β over 64 mels)
    assert sum(r.params for r in rows) + 4 * (64 + 128 + 256 + 512 + 1024 + 2048) + 2 * 64 == 21_012_431


def test_hand_layer_formula() -> None:
    """Grouped, strided conv and a linear layer on a real forward, against the textbook formula."""
    model = nn.Sequential(nn.Conv2d(4, 8, (3, 5), stride=2, padding=1, groups=2), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(2, 4, 17, 13)
    out = model[0](x)
    model(x)  # materialise the lazy layer
    prof = profile(model, (2, 4, 17, 13))
    conv_macs = out.numel() * (4 // 2) * 3 * 5
    assert prof.layers[0].macs == conv_macs
    assert prof.layers[0].out_shape == tuple(out.shape)
    assert prof.layers[1].macs == 2 * 3 * out[0].numel()
    assert prof.macs == conv_macs + 2 * 3 * out[0].numel()
    assert prof.params == count_params(model)


def test_batch_scales_macs_not_params() -> None:
    model = build("qcnn6", 10, width=0.125, n_mels=32)
    one, four = profile(model, (1, 4, 50, 32)), profile(model, (4, 4, 50, 32))
    assert four.macs == 4 * one.macs and four.params == one.params


@pytest.mark.parametrize("name", NAMES)
def test_model_and_fold_same_macs(name: str) -> None:
    model = build(name, 10, width=0.125, n_mels=32)
    folded = fold(model)
    shape = (1, 4, 101, 32)
    p_model, p_fold = profile(model, shape), profile(folded, shape)
    assert p_model.macs == p_fold.macs > 0
    assert [r.out_shape for r in p_model.layers] == [r.out_shape for r in p_fold.layers]
    if name.startswith("q"):
        # Quaternion weights count once: 4× fewer than the folded real kernels.
        q_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, QuaternionConv2d))
        real_weights = sum(m.weight.numel() for m in folded.modules() if isinstance(m, nn.Conv2d))
        assert real_weights == 4 * q_weights
        assert p_model.params < p_fold.params


def test_meta_pass_equals_real_pass(monkeypatch) -> None:
    model = build("qresnet38", 5, width=0.125, n_mels=16)
    meta = profile(model, (1, 4, 64, 16))

    def no_meta(*_args, **_kwargs):
        raise NotImplementedError("pretend an op has no meta kernel")

    monkeypatch.setattr(profile_mod, "_forward_meta", no_meta)
    real = profile(model, (1, 4, 64, 16))
    assert meta.macs == real.macs
    assert [(r.name, r.out_shape) for r in meta.layers] == [(r.name, r.out_shape) for r in real.layers]


def test_profile_leaves_model_alone() -> None:
    model = build("qcnn10", 5, width=0.125, n_mels=16)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    profile(model, (1, 4, 30, 16))
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._forward_hooks for m in model.modules())
