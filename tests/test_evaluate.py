"""`qedge train` / `qedge evaluate` end to end on a tiny folder dataset made of FSDD recordings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qedge.evaluate import average_precision, confusion_matrix, mean_average_precision, precision_recall

QEDGE = [sys.executable, "-m", "qedge"]


def _folder(fsdd_root: Path, dest: Path, digits=("0", "1"), per_class: int = 10, extra: dict | None = None) -> Path:
    """``dest/<digit>/*.wav`` symlinks to FSDD recordings of speaker jackson."""
    for d in digits:
        (dest / d).mkdir(parents=True, exist_ok=True)
        files = sorted((fsdd_root / "recordings").glob(f"{d}_jackson_*.wav"))[:per_class]
        for f in files:
            os.symlink(f, dest / d / f.name)
    for label, files in (extra or {}).items():
        (dest / label).mkdir(parents=True, exist_ok=True)
        for f in files:
            os.symlink(f, dest / label / f.name)
    return dest


def _run(args, env_cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "QEDGE_CACHE": str(env_cache)}
    return subprocess.run([*QEDGE, *map(str, args)], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def trained(fsdd_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaldata")
    data = _folder(fsdd_root, root / "digits")
    cache = root / "cache"
    model = root / "tiny.qedge"
    proc = _run(["train", "--data", data, "--arch", "qcnn6", "--width", "0.125", "--epochs", "2",
                 "--batch-size", "8", "--clip-seconds", "0.5", "--endpoint", "0.5", "--out", model, "--json"], cache)
    assert proc.returncode == 0, proc.stderr
    return data, model, cache, json.loads(proc.stdout.strip().splitlines()[-1])


def test_train_cli_writes_model_and_summary(trained):
    data, model, _cache, summary = trained
    assert model.exists() and not model.with_name(model.name + ".resume").exists()
    assert [p.name for p in model.parent.iterdir() if p.suffix in (".qedge", ".resume", ".tmp")] == ["tiny.qedge"]
    assert summary["file"] == str(model) and summary["epochs"] == 2 and summary["test_clips"] == 4
    assert 0.0 <= summary["accuracy"] <= 1.0 and summary["params"] > 0 and summary["macs"] > 0
    from qedge.checkpoint import read_meta

    meta = read_meta(model)
    assert meta["labels"] == ["0", "1"] and meta["clip_seconds"] == 0.5
    rec = meta["history"][-1]
    assert rec["step"] == "train" and len(rec["epochs"]) == 2 and rec["macs"] == summary["macs"]
    assert rec["endpoint"] == 0.5 and "RandomEndpoint" in rec["wave_augment"]  # the option reached training


def test_evaluate_cli_json_matches_library(trained, tmp_path):
    data, model, cache, _ = trained
    png = tmp_path / "conf.png"
    proc = _run(["evaluate", model, "--data", data, "--split", "all", "--json", "--plot", png], cache)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["n"] == 20 and result["labels"] == ["0", "1"]
    conf = np.array(result["confusion"])
    assert conf.sum() == 20 and conf.sum(axis=1).tolist() == [10, 10]
    assert result["accuracy"] == pytest.approx(np.trace(conf) / 20)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    import qedge
    from qedge.data import find_dataset
    from qedge.evaluate import evaluate

    net, meta = qedge.load(model)
    lib = evaluate(net, meta, find_dataset(data), split="all", cache_dir=cache)
    assert lib["accuracy"] == pytest.approx(result["accuracy"]) and lib["confusion"] == result["confusion"]
    test_only = evaluate(net, meta, find_dataset(data), split="test", cache_dir=cache)
    assert test_only["n"] == 4


def test_evaluate_refuses_unknown_labels_in_one_line(trained, fsdd_root, tmp_path):
    _data, model, cache, _ = trained
    other = _folder(fsdd_root, tmp_path / "other", digits=("0",), per_class=3,
                    extra={"seven": sorted((fsdd_root / "recordings").glob("7_theo_*.wav"))[:3]})
    proc = _run(["evaluate", model, "--data", other, "--split", "all"], cache)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'seven'" in lines[0] and "Traceback" not in proc.stderr
    proc = _run(["evaluate", tmp_path / "nope.qedge", "--data", other], cache)
    assert proc.returncode != 0 and "no such file" in proc.stderr and "Traceback" not in proc.stderr


def test_metrics_on_hand_checked_examples():
    conf = confusion_matrix(np.array([0, 1, 1, 2, 2, 2]), np.array([0, 0, 1, 2, 2, 1]), 3)
    assert conf.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 2]]
    precision, recall = precision_recall(conf)
    np.testing.assert_allclose(precision, [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(recall, [0.5, 0.5, 1.0])
    # AP: ranking + - + (scores 0.9, 0.8, 0.7) → (1/1 + 2/3) / 2
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1])) == pytest.approx((1 + 2 / 3) / 2)
    scores = np.array([[0.9, 0.1], [0.8, 0.6], [0.7, 0.2]])
    targets = np.array([[1, 0], [0, 1], [1, 0]])
    m, ap = mean_average_precision(scores, targets)
    assert ap[1] == pytest.approx(1.0) and m == pytest.approx(((1 + 2 / 3) / 2 + 1.0) / 2)
