"""The fit loop on a tiny real subset (FSDD digits): it learns, resumes bit-identically, distils."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from qedge.checkpoint import load
from qedge.data import ClipDataset, ClipIndex, find_dataset
from qedge.models import build
from qedge.runtime.features import FeatureConfig
from qedge.recipes import RECIPES
from qedge.fit import TrainConfig, fit, lr_factor
from qedge.resume import load_resume, save_resume

FEATURES = FeatureConfig(sample_rate=8000, n_fft=256, hop_length=80, n_mels=32, fmin=20.0, fmax=4000.0)


@pytest.fixture(scope="module")
def tiny(fsdd_root, tmp_path_factory):
    """24 recordings of digits 0/1/2 by one speaker, 0.5 s windows at 8 kHz (features cached)."""
    index = find_dataset(fsdd_root, "fsdd")
    clips = [c for c in index.clips if c.speaker == "jackson" and c.labels[0] in ("0", "1", "2")]
    clips = sorted(clips, key=lambda c: c.path.name)
    chosen = [c for lab in ("0", "1", "2") for c in [x for x in clips if x.labels[0] == lab][:8]]
    sub = ClipIndex(chosen, format="fsdd")
    cache = tmp_path_factory.mktemp("cache")
    train = ClipDataset(sub, FEATURES, clip_seconds=0.5, train=True, cache_dir=cache)
    fixed = ClipDataset(sub, FEATURES, clip_seconds=0.5, train=False, cache_dir=cache)
    return train, fixed


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return build("qcnn6", num_classes=3, width=0.125, n_mels=FEATURES.n_mels)


def test_lr_schedule_warmup_then_cosine():
    f = [lr_factor(s, 100, 10, 0.01) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # non-increasing after warm-up
    assert f[99] == pytest.approx(0.01, abs=2e-3)


def test_a_few_epochs_learn(tiny):
    train, fixed = tiny
    model = _model()
    config = TrainConfig(epochs=8, batch_size=8, lr=3e-3, specaugment=False, device="cpu", warmup_epochs=0.5)
    history = fit(model, fixed, fixed, config, progress=False)
    assert [r["epoch"] for r in history] == list(range(1, 9))
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    best = max(r["accuracy"] for r in history)
    assert best >= 0.7  # chance is 1/3: the 24 training clips are being fitted
    # the best epoch's weights are the ones left in the model
    from qedge.evaluate import accuracy
    from qedge.inference import predict

    logits, targets = predict(model, fixed)
    assert accuracy(logits, targets) == pytest.approx(best)


def test_resume_after_kill_gives_identical_weights(tiny, tmp_path):
    train, fixed = tiny
    config = TrainConfig(epochs=3, batch_size=8, lr=2e-3, specaugment=True, mixup=0.3, device="cpu")
    finals = {}

    def keep(run):
        def on_epoch_end(state):
            if state.epoch == 3:
                finals[run] = {k: v.clone() for k, v in state.model.state_dict().items()}
        return on_epoch_end

    fit(_model(), train, fixed, config, on_epoch_end=keep("straight"), progress=False)

    class Killed(Exception):
        pass

    path = tmp_path / "run.qedge.resume"

    def save_then_die(state):
        save_resume(path, state)
        if state.epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        fit(_model(), train, fixed, config, on_epoch_end=save_then_die, progress=False)
    state = load_resume(path)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    # a fresh process would build the model from another seed: the resume state overrides it
    resumed = fit(_model(seed=123), train, fixed, config, resume_state=state, on_epoch_end=keep("resumed"),
                  progress=False)
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    for key, value in finals["straight"].items():
        assert torch.equal(value, finals["resumed"][key]), key


def test_kd_path_uses_kd_loss_and_keeps_teacher_frozen(tiny, monkeypatch):

    train, fixed = tiny
    teacher = _model(seed=1).eval()
    before = copy.deepcopy(teacher.state_dict())
    calls = []
    import qedge.fit

    real = qedge.fit.kd_loss

    def spy(student_logits, teacher_logits, T, task):
        calls.append((T, task, student_logits.requires_grad, teacher_logits.requires_grad))
        return real(student_logits, teacher_logits, T, task)

    monkeypatch.setattr(qedge.fit, "kd_loss", spy)
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-3, specaugment=False, device="cpu")
    with_kd = fit(_model(), fixed, None, config, teacher=teacher, kd_temperature=3.0, progress=False)
    without = fit(_model(), fixed, None, config, progress=False)
    assert len(calls) == 3 and all(c == (3.0, "single-label", True, False) for c in calls)
    assert with_kd[0]["train_loss"] > without[0]["train_loss"]  # + T²·KL ≥ 0, > 0 for different nets
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k])


def test_recipes_name_real_architectures_and_features():
    from qedge.models import NAMES

    for name, recipe in RECIPES.items():
        assert recipe["arch"] in NAMES, name
        FeatureConfig.from_dict({**FeatureConfig().to_dict(), **recipe["features"]})  # valid config


def test_spectral_clipping_during_training_bounds_every_conv(tiny):
    from qedge.nn import QuaternionConv2d
    from qedge.spectral import input_sizes, padded_grid, spectral_norm

    train, fixed = tiny
    model = _model()
    config = TrainConfig(epochs=1, batch_size=8, lr=5e-3, specaugment=False, device="cpu", clip_sv=1.5,
                         clip_every=2)
    fit(model, fixed, None, config, progress=False)
    sizes = input_sizes(model, (1, *fixed.feature_shape))
    convs = {n: m for n, m in model.named_modules() if isinstance(m, QuaternionConv2d)}
    assert convs and set(convs) <= set(sizes)
    for name, conv in convs.items():
        sigma = spectral_norm(conv, padded_grid(sizes[name], conv.kernel_size, conv.dilation))
        assert sigma <= 1.5 * 1.01, (name, sigma)


# -- the qedge train CLI: interrupted and resumed, refusals, one-line errors ---------------------
@pytest.fixture(scope="module")
def digits_folder(fsdd_root, tmp_path_factory) -> Path:
    """24 FSDD recordings (digits 0-2: six takes by jackson, two by yweweler, the default held-out voice)."""
    import shutil

    root = tmp_path_factory.mktemp("digits")
    (root / "recordings").mkdir()
    for digit in "012":
        for speaker, takes in (("jackson", 6), ("yweweler", 2)):
            for take in range(takes):
                name = f"{digit}_{speaker}_{take}.wav"
                shutil.copy(fsdd_root / "recordings" / name, root / "recordings" / name)
    return root


def _train_cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qedge", "train", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, **kw)


def test_cli_resume_after_kill_matches_an_uninterrupted_run(digits_folder, tmp_path):
    base = ["--data", str(digits_folder), "--seed", "3"]
    common = [*base, "--width", "0.125", "--epochs", "8"]
    whole = _train_cli(*common, "--out", str(tmp_path / "whole.qedge"), "--json")
    assert whole.returncode == 0, whole.stderr

    out = tmp_path / "cut.qedge"
    proc = subprocess.Popen([sys.executable, "-m", "qedge", "train", *common, "--out", str(out), "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    resume_file = out.with_name(out.name + ".resume")
    deadline = time.monotonic() + 120
    while not resume_file.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # a crash, not a polite stop
    proc.wait()
    assert resume_file.exists(), "the run ended before it could be interrupted"

    # other settings are refused in one line, and the resume state is kept
    for other, why in ((["--width", "0.125", "--epochs", "9"], "schedule would differ"),
                       (["--width", "0.25", "--epochs", "8"], "width")):
        refused = _train_cli(*base, *other, "--out", str(out), "--resume", "--json")
        err = refused.stderr.strip()
        assert refused.returncode != 0 and why in err and len(err.splitlines()) == 1, err
        assert resume_file.exists()

    resumed = _train_cli(*common, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr
    assert not resume_file.exists()  # removed once the run completes
    a, meta_a = load(tmp_path / "whole.qedge")
    b, meta_b = load(out)
    for (key, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), key
    assert meta_a["history"][-1]["epochs"][-1]["accuracy"] == meta_b["history"][-1]["epochs"][-1]["accuracy"]


@pytest.mark.parametrize("args, why", [
    (["--data", "/nonexistent/set"], "/nonexistent/set"),
    (["--data", "esc10", "--arch", "qcnn99"], "qcnn99"),
    (["--data", "esc10", "--test-fold", "9"], "fold '9'"),
    (["--data", "esc10", "--head", "tanh"], "tanh"),
])
def test_cli_errors_are_one_line(args, why, tmp_path):
    proc = _train_cli(*args, "--out", str(tmp_path / "m.qedge"), "--epochs", "1")
    err = proc.stderr.strip()
    assert proc.returncode != 0 and why in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "m.qedge").exists()


def test_sigmoid_head_on_single_label_data_trains_one_vs_rest(digits_folder, tmp_path):
    """`--head sigmoid` on single-label clips: one-hot BCE targets, mAP as the metric, a multi-label
    model file whose ONNX ends in Sigmoid, and every later command sees the clips as it was trained."""
    import json

    import onnx

    from qedge.data import find_dataset
    from qedge.export.onnx import export_onnx, model_info
    from qedge.meta import ModelRecord

    out = tmp_path / "sigmoid.qedge"
    proc = _train_cli("--data", str(digits_folder), "--head", "sigmoid", "--width", "0.125", "--epochs", "3",
                      "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 0.0 < summary["map"] <= 1.0 and "accuracy" not in summary
    model, meta = load(out)
    record = ModelRecord.from_meta(meta)
    assert meta["task"] == "multi-label" and record.labels == ["0", "1", "2"] and record.background_label is None
    assert meta["history"][-1]["head"] == "sigmoid" and not record.open_set
    train, test = record.test_split(find_dataset(digits_folder))
    assert train.multilabel and test.multilabel and {c.speaker for c in test.clips} == {"yweweler"}
    onnx_path = export_onnx(model, model_info(model, meta), tmp_path / "sigmoid.onnx")
    assert onnx.load(str(onnx_path)).graph.node[-1].op_type == "Sigmoid"
    evaluated = subprocess.run([sys.executable, "-m", "qedge", "evaluate", str(out), "--data", str(digits_folder),
                                "--json"], capture_output=True, text=True)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["map"] == pytest.approx(summary["map"], abs=1e-6)
    every = subprocess.run([sys.executable, "-m", "qedge", "evaluate", str(out), "--data", str(digits_folder),
                            "--split", "all", "--json"], capture_output=True, text=True)
    assert every.returncode == 0, every.stderr
    assert json.loads(every.stdout.strip().splitlines()[-1])["n"] == 24


def test_epochs_are_chosen_on_validation_clips_and_the_test_clips_only_score(digits_folder, tmp_path):
    """`qedge train` keeps the epoch with the best validation accuracy (clips carved from the
    training speakers), scores the held-out speaker once on those weights, and `qedge compress`
    fine-tunes on the same fit/validation split."""
    from qedge.compress.pipeline import load_datasets
    from qedge.data import find_dataset
    from qedge.evaluate import evaluate_metric
    from qedge.meta import ModelRecord
    from qedge.train import train_model

    model, meta = train_model(digits_folder, width=0.125, epochs=4, out=tmp_path / "m.qedge", progress=False)
    rec = meta["history"][-1]
    record = ModelRecord.from_meta(meta)
    fit_idx, val_idx, test_idx = record.fit_split(find_dataset(digits_folder))
    assert rec["selected_on"] == "validation" and rec["val_fraction"] == 0.2 and rec["val_clips"] == len(val_idx) > 0
    assert {c.speaker for c in test_idx.clips} == {"yweweler"} and "yweweler" not in {c.speaker for c in val_idx.clips}
    assert rec["train_clips"] == len(fit_idx) and rec["test_clips"] == len(test_idx)
    # every per-epoch figure is a validation figure: the kept epoch is the best of them ...
    assert rec["val_accuracy"] == max(e["accuracy"] for e in rec["epochs"])
    assert rec["epochs"][rec["best_epoch"] - 1]["accuracy"] == rec["val_accuracy"]
    # ... and the kept weights reproduce it on the validation clips, and the test figure on the test clips
    data = load_datasets(str(digits_folder), None, meta)
    assert sorted(c.id for c in data.val.clips) == sorted(c.id for c in val_idx.clips)
    assert not {c.id for c in data.train.clips} & {c.id for c in val_idx.clips}
    assert evaluate_metric(model, data.val, "single-label") == pytest.approx(rec["val_accuracy"])
    assert evaluate_metric(model, data.test, "single-label") == pytest.approx(rec["accuracy"])
