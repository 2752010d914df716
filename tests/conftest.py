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
