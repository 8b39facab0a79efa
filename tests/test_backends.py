"""Template tests, written once and run for every backend in edgekd.lower.BACKENDS and every task (as NNCF
tests its backends): each exports a model (a classifier's N×K logits, a segmentation model's N×K×H×W),
opens a runner on its file, checks it against torch with the one logit comparison, and gives the bundle
exactly the files the table names, which the verify route re-runs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekd import targets
from edgekd.errors import LoweringError, TargetError
from edgekd.lower import BACKENDS, backend_info, get_backend
from edgekd.lower.validate import check_agreement

FILE_BACKENDS = [name for name, b in BACKENDS.items() if b.bundle_files]


TASKS = ("classification", "segmentation")


def task_model(task: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if task == "segmentation":  # per-pixel logits of the input's size, with a skip-free encoder-decoder
        return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                   torch.nn.Upsample(scale_factor=2.0, mode="bilinear"), torch.nn.Conv2d(4, 2, 1)).eval()
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(16, 1, 12, 12)).astype(np.float32)


def test_the_table_names_every_runtime_a_target_profile_may_ask_for():
    assert set(BACKENDS) == set(targets.RUNTIMES)
    for b in BACKENDS.values():
        assert b.host_runtime in (None, *BACKENDS) and b.device_runtime in (None, *BACKENDS)
    with pytest.raises(TargetError, match="did you mean 'openvino'"):
        backend_info("openvin")


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", FILE_BACKENDS)
def test_every_backend_exports_runs_and_bundles_its_files(name, task, images, tmp_path):
    model = task_model(task)
    backend, module = backend_info(name), get_backend(name)
    example = torch.from_numpy(images[:1])
    path = module.export(model, example, tmp_path / "student", opset=13)
    files = backend.files_for_bundle(path)
    assert list(files) == [n for n, _ in backend.bundle_files] and all(p.is_file() for p in files.values())
    with torch.no_grad():
        ref = model(torch.from_numpy(images)).numpy()
    runner = module.open_runner(path, threads=1, precision="fp32")
    assert runner(images).shape == ref.shape == ((16, 2, 12, 12) if task == "segmentation" else (16, 2))
    assert check_agreement(f"{name} fp32", ref, runner(images), precision="fp32").ok
    # what `edgekd verify` does with a bundle: the host runtime re-runs the bundle's model file
    host = get_backend(backend.host_runtime).open_runner(files[backend.bundle_model], threads=1, precision="fp32")
    np.testing.assert_allclose(host(images), runner(images), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in FILE_BACKENDS if backend_info(n).device_built])
def test_a_device_built_engine_cannot_be_opened_on_the_host(name, tmp_path):
    (tmp_path / "model.engine").write_bytes(b"\0")
    with pytest.raises(LoweringError, match="runs only on the device"):
        get_backend(name).open_runner(tmp_path / "model.engine", threads=1)
