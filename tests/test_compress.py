"""qedge.compress: filter scores, quaternion-granular pruning, KD loss, reports (design.md §6)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from qedge.compress.distill import kd_loss, student_width_for_macs
from qedge.compress.prune import kept_filters, prune, quaternion_layers
from qedge.compress.report import write_report
from qedge.compress.scores import filter_scores
from qedge.errors import QedgeError
from qedge.models import build
from qedge.nn import QuaternionConv2d, QuaternionLinear, split_hamilton
from qedge.profile import count_params, profile


def _conv_with(weight: torch.Tensor) -> QuaternionConv2d:
    """A quaternion conv holding ``weight`` of shape (4, F, C, kh, kw)."""
    _, f, c, kh, kw = weight.shape
    layer = QuaternionConv2d(4 * c, 4 * f, (kh, kw), bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer


def _small(arch: str = "qcnn14", width: float = 0.125, classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build(arch, classes, width=width)
    with torch.no_grad():  # non-trivial BN statistics so the fold/checkpoint comparisons mean something
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------
def test_l1_orders_by_magnitude_and_zero_filter_is_lowest() -> None:
    torch.manual_seed(0)
    w = torch.randn(4, 5, 3, 3, 3)
    w[:, 2] = 0.0          # a dead filter
    w[:, 4] = 3 * w[:, 1]  # three times filter 1
    s = filter_scores(_conv_with(w), "l1")
    assert s.shape == (5,)
    assert int(s.argmin()) == 2 and float(s[2]) == 0.0
    assert float(s[4]) == pytest.approx(3 * float(s[1]))
    assert float(s[0]) == pytest.approx(float(w[:, 0].abs().sum()), rel=1e-6)


def test_gm_filter_at_the_median_goes_first() -> None:
    torch.manual_seed(1)
    base = torch.randn(4, 1, 2, 3, 3)
    d = torch.randn(4, 1, 2, 3, 3)
    # filters: base ± d, base ± 2d, and base itself (the geometric median of the set)
    w = torch.cat([base + d, base - d, base, base + 2 * d, base - 2 * d], dim=1)
    s = filter_scores(_conv_with(w), "gm")
    assert int(s.argmin()) == 2
    flat = w.permute(1, 0, 2, 3, 4).reshape(5, -1).double()
    expected = torch.cdist(flat, flat).sum(1)
    torch.testing.assert_close(s, expected)


def _opnorm_numpy(weight: np.ndarray) -> np.ndarray:
    """Direct re-derivation of the operator-norm criterion (design.md §6), loops and numpy SVD."""
    comps, f, c = weight.shape[:3]
    total = np.zeros(f)
    for comp in weight.reshape(comps, f, c, -1).astype(np.float64):
        s = np.zeros(f)
        for ch in range(c):
            a = comp[:, ch, :]
            mu = a.mean(axis=0)
            _, _, vt = np.linalg.svd(a - mu)
            v = vt[0]
            v = v * np.sign(v[np.argmax(np.abs(v))])
            for filt in range(f):
                s[filt] += (a[filt] - mu) @ v
        s = s ** 2
        total += s / s.max()
    return total / comps


def test_opnorm_matches_numpy_rederivation() -> None:
    torch.manual_seed(2)
    w = torch.randn(4, 7, 3, 3, 3)
    s = filter_scores(_conv_with(w), "opnorm").numpy()
    np.testing.assert_allclose(s, _opnorm_numpy(w.numpy()), rtol=1e-9, atol=1e-12)
    assert s.max() <= 1.0 + 1e-12 and s.min() >= 0.0


def test_opnorm_filter_equal_to_mean_scores_zero() -> None:
    torch.manual_seed(3)
    w = torch.randn(4, 5, 2, 3, 3)
    w[:, 3] = w[:, [0, 1, 2, 4]].mean(dim=1)  # = the mean over all five filters
    s = filter_scores(_conv_with(w), "opnorm")
    assert int(s.argmin()) == 3 and float(s[3]) == pytest.approx(0.0, abs=1e-12)


def test_scores_work_on_quaternion_linear_and_reject_other_layers() -> None:
    lin = QuaternionLinear(16, 12)
    for method in ("l1", "opnorm", "gm"):
        assert filter_scores(lin, method).shape == (3,)
    with pytest.raises(QedgeError, match="quaternion layer or a real Conv2d"):
        filter_scores(nn.Linear(4, 4), "l1")
    with pytest.raises(QedgeError, match="ungrouped"):
        filter_scores(nn.Conv2d(4, 4, 3, groups=2), "l1")
    with pytest.raises(QedgeError, match="unknown pruning criterion"):
        filter_scores(lin, "taylor")


def test_scores_of_a_real_conv_rank_its_output_channels() -> None:
    """A real Conv2d is a one-component layer: one score per real output channel, opnorm is the
    real criterion of Singh & Plumbley (the numpy re-derivation with one component)."""
    torch.manual_seed(4)
    conv = nn.Conv2d(3, 7, 3, bias=False)
    w = conv.weight.detach()
    np.testing.assert_allclose(filter_scores(conv, "opnorm").numpy(), _opnorm_numpy(w[None].numpy()),
                               rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(filter_scores(conv, "l1"), w.double().abs().sum(dim=(1, 2, 3)))
    flat = w.double().reshape(7, -1)
    torch.testing.assert_close(filter_scores(conv, "gm"), torch.cdist(flat, flat).sum(1))
    spectral = filter_scores(conv, "spectral", input_size=(6, 6))
    for o in range(7):  # σ_max of output channel o's circular operator = ‖its dense row block‖₂
        eye = torch.eye(3 * 36, dtype=torch.float64).reshape(-1, 3, 6, 6)
        padded = torch.nn.functional.pad(eye, (1, 1, 1, 1), mode="circular")
        dense = torch.nn.functional.conv2d(padded, w[o:o + 1].double()).reshape(3 * 36, -1).T.numpy()
        assert float(spectral[o]) == pytest.approx(float(np.linalg.norm(dense, 2)), rel=1e-6)
    assert filter_scores(conv, "random").shape == (7,)


def test_spectral_scores_are_filter_operator_norms() -> None:
    torch.manual_seed(4)
    layer = QuaternionConv2d(8, 12, 3, padding=1, bias=False)
    s = filter_scores(layer, "spectral", input_size=(6, 6))
    assert s.shape == (3,)
    # σ_max of one filter's circular operator on a 6×6 grid = that of the 1-filter layer's dense matrix
    for f in range(3):
        single = _conv_with(layer.weight[:, f:f + 1].detach())
        real = single.real_weight().double()  # (4, 8, 3, 3)
        eye = torch.eye(8 * 36, dtype=torch.float64).reshape(-1, 8, 6, 6)
        padded = torch.nn.functional.pad(eye, (1, 1, 1, 1), mode="circular")
        dense = torch.nn.functional.conv2d(padded, real).reshape(8 * 36, -1).T
        d = dense.detach().numpy()
        assert float(s[f]) == pytest.approx(float(np.sqrt(np.linalg.eigvalsh(d @ d.T)[-1])), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Pruning
# ---------------------------------------------------------------------------------------------
def _check_hamilton(model: nn.Module) -> None:
    for name, m in quaternion_layers(model).items():
        split_hamilton(m.real_weight())  # raises if the structure is lost
        assert m.weight.shape[0] == 4, name


def test_prune_later_layers_of_qcnn14_keeps_structure_and_kept_filters() -> None:
    model = _small()
    x = torch.randn(2, 4, 64, 64)
    pruned = prune(model, "l1", 0.5, layers="later")
    _check_hamilton(pruned)
    assert pruned.arch == "qcnn14" and pruned.arch_kwargs == model.arch_kwargs
    before = {n: m.out_channels for n, m in quaternion_layers(model).items() if isinstance(m, QuaternionConv2d)}
    after = {n: m.out_channels for n, m in quaternion_layers(pruned).items() if isinstance(m, QuaternionConv2d)}
    for name in before:
        f = before[name] // 4
        expected = 4 * (f - f // 2) if name in model.later_layers else before[name]
        assert after[name] == expected, name
    # consumers: BN widths and fc1 inputs follow
    assert pruned.conv_block4.bn1.num_features == after["conv_block4.conv1"]
    assert pruned.conv_block5.conv1.in_channels == after["conv_block4.conv2"]
    assert pruned.fc1.in_features == after["conv_block6.conv2"]
    assert pruned.fc1.out_features == model.fc1.out_features
    assert pruned(x).shape == (2, 10)
    # the kept quaternion filters of the first pruned layer are untouched: their real channels match
    removed = pruned.pruning["groups"][0]["removed"]
    f = model.conv_block4.conv1.weight.shape[1]
    keep = [q for q in range(f) if q not in removed]
    l1 = model.conv_block4.conv1.weight.detach().abs().sum(dim=(0, 2, 3, 4))
    assert max(l1[removed]) <= min(l1[keep])  # the lowest-ℓ1 half went
    torch.testing.assert_close(pruned.conv_block4.conv1.weight, model.conv_block4.conv1.weight[:, keep])
    feats = {}
    for mod, tag in ((model, "a"), (pruned, "b")):
        mod.conv_block4.conv1.register_forward_hook(lambda m, i, o, tag=tag: feats.__setitem__(tag, o))
        mod(x)
    real_keep = [c * f + q for c in range(4) for q in keep]
    torch.testing.assert_close(feats["b"], feats["a"][:, real_keep])
    assert model.conv_block4.conv1.out_channels == 4 * f  # the input model is untouched


def test_prune_all_layers_every_criterion_runs() -> None:
    model = _small("qcnn6", width=0.25)
    for method in ("opnorm", "l1", "gm"):
        pruned = prune(model, method, 0.25, layers="all")
        _check_hamilton(pruned)
        assert pruned(torch.randn(1, 4, 48, 64)).shape == (1, 10)
        widths = pruned.pruning["widths_after"]
        assert all(widths[n] < model.get_submodule(n).out_channels for n in widths if n.startswith("conv_block"))


@pytest.fixture(scope="module")
def qcnn14_full() -> nn.Module:
    """Full-size QCNN14 (527 classes) built on meta then filled with cheap random weights."""
    with torch.device("meta"):
        model = build("qcnn14", 527)
    model = model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(generator=g)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
    return model.eval()


@pytest.mark.parametrize("ratio,params,gmacs", [
    (0.25, 12_673_487, 15.75), (0.5, 6_620_111, 12.53), (0.75, 2_852_303, 10.47)])
def test_qcnn14_pruning_figures(qcnn14_full: nn.Module, ratio: float, params: int, gmacs: float) -> None:
    """design.md §6 / the issue: 527 classes, 10 s (1001×64), later layers = blocks 4–6 + fc1 input."""
    base = profile(qcnn14_full, (1, 4, 1001, 64))
    assert base.params == 21_012_431 and round(base.macs / 1e9, 2) == 20.15
    pruned = prune(qcnn14_full, "l1", ratio, layers="later", example_input=torch.randn(1, 4, 32, 64))
    prof = profile(pruned, (1, 4, 1001, 64))
    assert prof.params == params
    assert round(prof.macs / 1e9, 2) == gmacs


def test_qresnet38_residual_partners_pruned_together() -> None:
    model = _small("qresnet38", width=0.125)
    pruned = prune(model, "opnorm", 0.5, layers="later", example_input=torch.randn(1, 4, 64, 64))
    _check_hamilton(pruned)
    coupled = [g for g in pruned.pruning["groups"] if len(g["layers"]) > 1]
    assert coupled, "the residual stream of layer3/layer4 must form coupled groups"
    for g in coupled:
        widths = {pruned.get_submodule(n).out_channels for n in g["layers"]}
        assert widths == {4 * g["filters_after"]}
    stage3 = [n for n in quaternion_layers(pruned) if n.startswith("resnet.layer3.") and n.endswith("conv2")]
    assert len({pruned.get_submodule(n).out_channels for n in stage3}) == 1
    assert pruned.get_submodule("resnet.layer3.0.downsample.1").out_channels == \
        pruned.get_submodule("resnet.layer3.0.conv2").out_channels
    assert pruned(torch.randn(2, 4, 64, 64)).shape == (2, 10)


def test_prune_a_real_mccnn_cuts_its_lowest_channels_and_keeps_the_rest_of_the_function() -> None:
    """Real-channel pruning (the MCCNN / CNN baselines): removing channels equals silencing them.

    Zeroing the BatchNorm scale and shift of a removed channel makes its post-ReLU map 0, so every
    consumer sees exactly what the pruned model computes without that channel."""
    model = _small("mccnn6", width=0.25)
    x = torch.randn(2, 4, 64, 64)
    pruned = prune(model, "l1", 0.5, layers="later")
    assert pruned.arch == "mccnn6" and pruned.conv_block3.conv1.out_channels == 32
    assert pruned.conv_block4.conv1.in_channels == 32 and pruned.conv_block4.conv1.out_channels == 64
    assert pruned.conv_block3.bn1.num_features == 32 and pruned.fc1.in_features == 64
    assert pruned.conv_block2.conv1.out_channels == model.conv_block2.conv1.out_channels  # not in scope
    silenced = copy.deepcopy(model)
    inputs = list(range(model.conv_block3.conv1.in_channels))
    for group in pruned.pruning["groups"]:  # in network order, each scored on its input-pruned weights
        (name,) = group["layers"]
        conv = model.get_submodule(name)
        l1 = conv.weight.detach()[:, inputs].abs().sum(dim=(1, 2, 3))
        removed = group["removed"]
        kept = [c for c in range(conv.out_channels) if c not in removed]
        inputs = kept
        assert len(removed) == conv.out_channels // 2 and max(l1[removed]) <= min(l1[kept])
        bn = silenced.get_submodule(name.replace("conv1", "bn1"))
        with torch.no_grad():
            bn.weight[removed] = 0.0
            bn.bias[removed] = 0.0
    torch.testing.assert_close(pruned(x), silenced(x), rtol=1e-5, atol=1e-5)
    assert count_params(pruned) < count_params(model) and pruned.pruning["widths_after"]["conv_block3.conv1"] == 32


def test_round_to_keeps_real_widths_multiples() -> None:
    model = _small("qcnn10", width=0.3)  # odd quaternion counts: 5, 10, 19, 38 (blocks 1–4)
    for n in (8, 16):
        pruned = prune(model, "l1", 0.3, layers="all", round_to=n)
        for g in pruned.pruning["groups"]:
            if g["filters_after"] < g["filters_before"]:
                for name in g["layers"]:
                    assert pruned.get_submodule(name).out_channels % n == 0, (n, name)
        _check_hamilton(pruned)
    assert kept_filters(77, 0.5) == 39 and kept_filters(77, 0.5, round_to=16) == 40
    assert kept_filters(3, 0.5, round_to=16) == 3  # cannot reach a multiple: layer kept whole
    with pytest.raises(QedgeError, match="multiple of 4"):
        prune(model, round_to=6)


def test_prune_rejects_bad_requests() -> None:
    model = _small()
    with pytest.raises(QedgeError, match="not a prunable layer"):
        prune(model, layers=["conv_block4.conv9"])
    with pytest.raises(QedgeError, match="not a prunable layer"):
        prune(model, layers="fc_audioset")
    with pytest.raises(QedgeError, match="ratio"):
        prune(model, ratio=1.0)
    with pytest.raises(QedgeError, match="criterion"):
        prune(model, method="taylor")


def test_pruned_model_reloads_and_folds(tmp_path) -> None:
    from qedge.checkpoint import load, save
    from qedge.export.fold import fold

    model = _small()
    pruned = prune(model, "gm", 0.5).eval()
    x = torch.randn(2, 4, 64, 64)
    expected = pruned(x)
    meta = {"labels": [str(i) for i in range(10)], "features": {"n_mels": 64}, "clip_seconds": 1.0,
            "task": "single-label", "history": [{"compress": pruned.pruning}]}
    path = save(tmp_path / "p.qedge", pruned, meta)
    again, meta2 = load(path)
    torch.testing.assert_close(again(x), expected)
    assert again.conv_block6.conv2.out_channels == pruned.conv_block6.conv2.out_channels
    assert meta2["history"][0]["compress"]["method"] == "gm"
    folded = fold(pruned).eval()
    assert not any(isinstance(m, (QuaternionConv2d, QuaternionLinear)) for m in folded.modules())
    torch.testing.assert_close(folded(x), expected, rtol=1e-4, atol=1e-4)


def test_prune_a_mean_norm_model_and_reload(tmp_path) -> None:
    """The per-window log-mel mean removal in the model's front (mean_norm, the FSDD recipe) is
    traced through by the dependency graph; the pruned model keeps it and reloads."""
    from qedge.checkpoint import load, save

    torch.manual_seed(0)
    model = build("qcnn6", 10, width=0.25, n_mels=40, mean_norm=True).eval()
    pruned = prune(model, "opnorm", 0.5).eval()
    assert pruned.mean_norm and pruned.conv_block4.conv1.out_channels == model.conv_block4.conv1.out_channels // 2
    x = torch.randn(2, 4, 101, 40)
    with torch.no_grad():
        expected = pruned(x)
        torch.testing.assert_close(pruned(x + torch.tensor([7.0, 0, 0, 0]).view(1, 4, 1, 1)), expected,
                                   rtol=1e-4, atol=1e-4)  # still blind to a log-mel offset
    meta = {"labels": [str(i) for i in range(10)], "features": {"n_mels": 40}, "clip_seconds": 1.0,
            "task": "single-label", "history": []}
    again, _ = load(save(tmp_path / "p.qedge", pruned, meta))
    with torch.no_grad():
        torch.testing.assert_close(again(x), expected)


# ---------------------------------------------------------------------------------------------
# Distillation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["single-label", "multi-label"])
def test_kd_loss_zero_for_equal_logits_positive_otherwise(task: str) -> None:
    torch.manual_seed(5)
    t = torch.randn(6, 5)
    assert float(kd_loss(t.clone(), t, 2.0, task)) == pytest.approx(0.0, abs=1e-6)
    assert float(kd_loss(torch.randn(6, 5), t, 2.0, task)) > 0.0


def test_kd_loss_matches_definition_and_t_squared_scaling() -> None:
    torch.manual_seed(6)
    s, t = torch.randn(4, 7, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)
    for temp in (1.0, 2.0, 4.0):
        p = torch.softmax(t / temp, -1)
        q = torch.softmax(s / temp, -1)
        manual = temp ** 2 * (p * (p.log() - q.log())).sum(-1).mean()
        assert float(kd_loss(s, t, temp)) == pytest.approx(float(manual), rel=1e-9)
        pb, qb = torch.sigmoid(t / temp), torch.sigmoid(s / temp)
        binary = temp ** 2 * (pb * (pb / qb).log() + (1 - pb) * ((1 - pb) / (1 - qb)).log()).mean()
        assert float(kd_loss(s, t, temp, "multi-label")) == pytest.approx(float(binary), rel=1e-9)


def test_kd_loss_gradients_reach_student_only() -> None:
    torch.manual_seed(7)
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4, requires_grad=True)
    kd_loss(s, t, 2.0).backward()
    assert s.grad is not None and float(s.grad.abs().sum()) > 0
    assert t.grad is None
    # gradient of T²·KL w.r.t. s is T·(q − p)/B
    p, q = torch.softmax(t.detach() / 2, -1), torch.softmax(s.detach() / 2, -1)
    torch.testing.assert_close(s.grad, 2 * (q - p) / 3)
    with pytest.raises(QedgeError):
        kd_loss(s, t, 0.0)
    with pytest.raises(QedgeError):
        kd_loss(s, t[:, :3], 2.0)


def test_student_width_matches_target_macs() -> None:
    target = profile(build("qcnn6", 10, width=0.5), (1, 4, 101, 64)).macs // 2
    width = student_width_for_macs("qcnn6", target, (1, 4, 101, 64), 10)
    got = profile(build("qcnn6", 10, width=width), (1, 4, 101, 64)).macs
    assert 0.8 * target <= got <= 1.02 * target


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def test_report_writes_markdown_json_png(tmp_path) -> None:
    runs = [
        {"name": "unpruned", "params": 1000, "macs": 2e9, "metric": 0.80, "latency_ms": 10.0,
         "latency_backend": "x"},
        {"name": "opnorm-0.5", "method": "opnorm", "ratio": 0.5, "params": 400, "macs": 1e9,
         "metric_before": 0.5, "metric": 0.79, "latency_ms": 6.0, "latency_backend": "x",
         "finetune_seconds": 3.0},
        {"name": "opnorm-0.5-r16", "method": "opnorm", "ratio": 0.5, "round_to": 16, "params": 420,
         "macs": 1.1e9, "metric": 0.79, "latency_ms": 5.0, "latency_backend": "x"},
    ]
    paths = write_report(runs, tmp_path, metric="accuracy", title="t")
    md = paths["md"].read_text()
    assert "opnorm-0.5-r16" in md and "round-to 16" in md and "×0.833" in md
    assert json.loads(paths["json"].read_text())["runs"][1]["params"] == 400
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(QedgeError):
        write_report([{"name": "x"}], tmp_path)
