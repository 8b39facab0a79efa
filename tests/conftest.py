"""Shared test set-up: no progress bars, deterministic torch, the real-data path."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
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


# quick pipeline settings for end-to-end tests: small slice, few steps, few timed runs
QUICK = ["--max-samples", "240", "--max-steps", "16", "--prune-steps", "1", "--recovery-steps", "4", "--qat-steps", "4",
         "--iterations", "20"]


@pytest.fixture(scope="session")
def data_and_teacher(tmp_path_factory) -> tuple[Path, Path]:
    """An .npz (real when available) and an ONNX teacher (a black-box teacher) trained on it."""
    import torch

    from edgekd._compat import import_timm
    from edgekd.config import Preprocessing
    from edgekd.data import load_dataset, make_synthetic_xrays
    from edgekd.train import train_classifier

    d = tmp_path_factory.mktemp("e2e")
    if PNEUMONIA.exists():
        npz = PNEUMONIA
    else:
        npz = d / "synthetic.npz"
        arrays = {}
        for i, split in enumerate(("train", "val", "test")):
            x, y = make_synthetic_xrays(300, size=28, seed=i)
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y.reshape(-1, 1)
        np.savez(npz, **arrays)
    data = load_dataset(npz, Preprocessing(), max_samples=240)
    torch.manual_seed(0)
    model = import_timm().create_model("resnet10t", pretrained=False, in_chans=data.channels,
                                       num_classes=data.num_classes)
    train_classifier(model, data.train, data.val, epochs=2, seed=0)
    onnx_path = d / "teacher.onnx"
    torch.onnx.export(model.eval(), data.test.images[:1], str(onnx_path), dynamo=False, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
    return npz, onnx_path




@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny test models run fastest on one thread (and CI's two cores are shared with the runtimes'
    own pools). Latency figures are unaffected: every runner pins its own thread count."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
