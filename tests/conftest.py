"""Shared test set-up: no progress bars, deterministic torch, the real-data path."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("EDGEKD_NO_PROGRESS", "1")

REPO = Path(__file__).resolve().parents[1]
PNEUMONIA = Path(os.environ.get("EDGEKD_PNEUMONIA", REPO.parent / "shared" / "data" / "pneumoniamnist.npz"))


@pytest.fixture(autouse=True)
def _seed_torch():
    import torch

    torch.manual_seed(0)
    yield


@pytest.fixture
def pneumonia_npz() -> Path:
    """The real PneumoniaMNIST file (../shared/data), or skip when this checkout has none."""
    if not PNEUMONIA.exists():
        pytest.skip(f"{PNEUMONIA} not present (set EDGEKD_PNEUMONIA)")
    return PNEUMONIA
