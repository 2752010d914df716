"""Model files: round trip, atomic writes, refusal of pickle/corrupt/foreign files, pruned reload."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from torch import nn

import qedge
from qedge import checkpoint
from qedge.errors import QedgeError
from qedge.models import build
from qedge.runtime.features import FeatureConfig

META = {
    "labels": ["dog", "rain", "sea"],
    "features": FeatureConfig().to_dict(),
    "clip_seconds": 5.0,
    "task": "single-label",
    "history": [{"step": "train", "epochs": 1, "accuracy": 0.5}],
}


def _model(arch: str = "qcnn6", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build(arch, num_classes=3, width=0.125)
    # non-trivial BN statistics so that buffers are checked too
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return model.eval()


def _x() -> torch.Tensor:
    return torch.randn(2, 4, 40, 64, generator=torch.Generator().manual_seed(1))


def test_round_trip_same_function_and_meta(tmp_path):
    model = _model()
    path = checkpoint.save(tmp_path / "m.qedge", model, META)
    loaded, meta = qedge.load(path)
    assert not loaded.training
    assert meta["arch"] == "qcnn6" and meta["arch_kwargs"]["num_classes"] == 3
    assert meta["labels"] == META["labels"] and meta["history"] == META["history"]
    assert FeatureConfig.from_dict(meta["features"]) == FeatureConfig()
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    with torch.no_grad():
        assert torch.equal(model(_x()), loaded(_x()))
    assert checkpoint.read_meta(path)["labels"] == META["labels"]


def test_atomic_write_survives_crash(tmp_path, monkeypatch):
    path = tmp_path / "m.qedge"
    checkpoint.save(path, _model(seed=0), META)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        checkpoint.save(path, _model(seed=1), {**META, "labels": ["a", "b", "c"]})
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["m.qedge"]  # no temp file left behind
    assert qedge.load(path)[1]["labels"] == META["labels"]


def test_rejects_pickle_corrupt_and_foreign_files(tmp_path):
    model = _model()
    torch_file = tmp_path / "torch.pt"
    torch.save(model.state_dict(), torch_file)
    raw_pickle = tmp_path / "raw.qedge"
    raw_pickle.write_bytes(pickle.dumps({"a": 1}))
    good = checkpoint.save(tmp_path / "good.qedge", model, META)
    truncated = tmp_path / "trunc.qedge"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.qedge"
    garbage.write_bytes(b"this is not a model at all" * 10)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    resume = tmp_path / "x.resume"
    checkpoint.save_tensors(resume, {"w": torch.zeros(1)}, {"format": checkpoint.RESUME_FORMAT})

    cases = {torch_file: "pickle", raw_pickle: "pickle", truncated: "corrupt", garbage: "not a qedge",
             foreign: "without qedge metadata", resume: "resume file", tmp_path / "missing.qedge": "no such file"}
    for path, words in cases.items():
        with pytest.raises(QedgeError) as info:
            checkpoint.load(path)
        message = str(info.value)
        assert words in message and str(path) in message and "\n" not in message


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = checkpoint.save(tmp_path / "m.qedge", _model("qcnn6"), {**META, "arch": "qcnn10"})
    with pytest.raises(QedgeError, match="do not match architecture 'qcnn10'"):
        checkpoint.load(path)


def _shrink(model: nn.Module) -> nn.Module:
    """Prune by hand: drop quaternion filters of block 3/4 and real units of fc1 (consumers too)."""
    with torch.no_grad():
        c3, b3, c4, b4 = model.conv_block3.conv1, model.conv_block3.bn1, model.conv_block4.conv1, model.conv_block4.bn1
        keep_q = torch.tensor([0, 2, 3, 5, 6])  # quaternion filters kept in block 3 (of 8)
        keep_r = torch.cat([keep_q + c * c3.weight.shape[1] for c in range(4)])  # their 4 real channels
        c3.weight = nn.Parameter(c3.weight[:, keep_q].clone())
        for name in ("weight", "bias"):
            setattr(b3, name, nn.Parameter(getattr(b3, name)[keep_r].clone()))
        b3.running_mean, b3.running_var = b3.running_mean[keep_r].clone(), b3.running_var[keep_r].clone()
        b3.num_features = len(keep_r)
        c4.weight = nn.Parameter(c4.weight[:, :, keep_q].clone())
        keep4 = torch.arange(0, c4.weight.shape[1] - 3)  # block 4 loses 3 quaternion filters
        keep4_r = torch.cat([keep4 + c * c4.weight.shape[1] for c in range(4)])
        c4.weight = nn.Parameter(c4.weight[:, keep4].clone())
        for name in ("weight", "bias"):
            setattr(b4, name, nn.Parameter(getattr(b4, name)[keep4_r].clone()))
        b4.running_mean, b4.running_var = b4.running_mean[keep4_r].clone(), b4.running_var[keep4_r].clone()
        b4.num_features = len(keep4_r)
        model.fc1.weight = nn.Parameter(model.fc1.weight[:, :, keep4].clone())
        fc = model.fc_audioset  # a real Linear after fc1: cut fc1's last 2 quaternion outputs
        q_out = model.fc1.weight.shape[1]
        model.fc1.weight = nn.Parameter(model.fc1.weight[:, : q_out - 2].clone())
        keep_fc = torch.cat([torch.arange(q_out - 2) + c * q_out for c in range(4)])
        model.fc1.bias = nn.Parameter(model.fc1.bias[keep_fc].clone())
        model.fc_audioset = nn.Linear(len(keep_fc), fc.out_features)
        model.fc_audioset.weight.copy_(fc.weight[:, keep_fc])
        model.fc_audioset.bias.copy_(fc.bias)
    return model


def test_pruned_model_reloads_with_pruned_shapes(tmp_path):
    model = _shrink(_model("qcnn6"))
    with torch.no_grad():
        expected = model(_x())
    path = checkpoint.save(tmp_path / "pruned.qedge", model, META)
    loaded, _ = checkpoint.load(path)
    assert loaded.conv_block3.conv1.weight.shape[1] == 5 and loaded.conv_block3.bn1.num_features == 20
    assert loaded.fc_audioset.in_features == loaded.fc1.out_features == model.fc1.out_features
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(loaded(_x()), expected, rtol=0, atol=0)


def test_generic_reshape_of_real_layers():
    """Real Conv2d / BatchNorm2d / Linear get their size attributes from the stored tensors."""
    net = nn.Sequential(nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 5))
    small = nn.Sequential(nn.Conv2d(4, 6, 3), nn.BatchNorm2d(6), nn.Flatten(), nn.Linear(6, 5))
    changed = checkpoint.apply_state_shapes(net, small.state_dict())
    assert changed == ["0", "1", "3"]
    net.load_state_dict(small.state_dict())
    assert (net[0].out_channels, net[1].num_features, net[3].in_features) == (6, 6, 6)
    x = torch.randn(2, 4, 3, 3)
    small.eval(), net.eval()
    assert torch.equal(net(x), small(x))


def test_header_length_ending_in_0x80_is_not_taken_for_a_pickle(tmp_path):
    """A safetensors header length whose low byte is 0x80 (pickle's PROTO opcode) must still load."""
    model = _model()
    path = tmp_path / "m.qedge"
    for pad in range(300):
        checkpoint.save(path, model, {**META, "note": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no padding gave a header length ending in 0x80")
    loaded, meta = qedge.load(path)
    assert meta["labels"] == META["labels"]
