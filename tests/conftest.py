"""Shared test fixtures: where the shared recordings live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("QEDGE_SHARED_DATA", REPO.parent / "shared" / "data"))
ESC10 = SHARED_DATA / "esc10"
FSDD = SHARED_DATA / "fsdd"


@pytest.fixture(scope="session")
def esc10_root() -> Path:
    if not ESC10.is_dir():
        pytest.fail(f"shared ESC-10 recordings not found at {ESC10}")
    return ESC10


@pytest.fixture(scope="session")
def fsdd_root() -> Path:
    if not FSDD.is_dir():
        pytest.fail(f"shared FSDD recordings not found at {FSDD}")
    return FSDD


#: A real QCNN (qcnn6, width 0.25) trained by `qedge train --data esc10` (folds 1–3) with this
#: repository's code; regenerate with `bash scripts/make_test_model.sh` when the model format changes.
TRAINED_ESC10 = REPO / "tests" / "fixtures" / "esc10-qcnn6.qedge"


@pytest.fixture(scope="session")
def trained_qedge() -> Path:
    if not TRAINED_ESC10.is_file():
        pytest.fail(f"{TRAINED_ESC10} is missing: run scripts/make_test_model.sh")
    return TRAINED_ESC10


@pytest.fixture(scope="session")
def trained_onnx(trained_qedge: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained ESC-10 model exported by the current export code (fp32 ONNX with metadata)."""
    from qedge import checkpoint
    from qedge.export.onnx import export_onnx, model_info

    model, meta = checkpoint.load(trained_qedge)
    out = tmp_path_factory.mktemp("trained") / "esc10-qcnn6.onnx"
    return export_onnx(model, model_info(model, meta), out)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors on a shared 2-core machine: one intra-op thread avoids spin-wait contention
    (modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
