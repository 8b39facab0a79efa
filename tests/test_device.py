"""--device: where training runs (edgekd/_device.py).

* ``auto`` is CUDA when torch sees a GPU, else the CPU; ``cpu``, ``cuda`` and ``cuda:N`` are asked for
  by name. A name edgekd does not know, CUDA on a torch without it, or a GPU index past the ones
  there are: one line, exit 2, no output folder, before any data is read.
* On the CPU nothing changes: the same seed gives the same weights whether ``--device`` is left at
  ``auto`` (on a machine without CUDA) or set to ``cpu``, and no autocast is entered.
* On CUDA the training forward passes run under bf16 autocast; models reach the device through
  :func:`edgekd._device.for_training` (a copy when the CPU original is still needed) and come back with
  :func:`~edgekd._device.to_cpu`. The machine here has no GPU: those paths are tested with a fake
  CUDA (monkeypatched availability) and torch's ``meta`` device standing in for the GPU.
"""
from __future__ import annotations

from types import SimpleNamespace as NS

import pytest
import torch
from typer.testing import CliRunner

from edgekd import _device
from edgekd._device import autocast, describe, for_training, resolve_device, to_cpu, to_device
from edgekd.cli import app
from edgekd.config import CompressConfig, DistillConfig
from edgekd.distill import distill
from edgekd.errors import InputError
from edgekd.pipeline.run import Run
from edgekd.train.loop import Phase, fit_classifier

from .test_distill import TinyCNN, make_data, teacher_logits

runner = CliRunner()
NO_CUDA = not torch.cuda.is_available()


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch as if it saw ``n`` GPUs (nothing is ever moved to them in these tests)."""
    def install(n: int = 1):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    return install


def _one_line_failure(tmp_path, *args: str) -> str:
    out = tmp_path / "build"
    res = runner.invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert not out.exists() and not list(tmp_path.glob(".build*"))
    return lines[0]


# ---------------------------------------------------------------- what --device accepts
def test_an_unknown_device_is_one_line_with_the_choices(tmp_path):
    line = _one_line_failure(tmp_path, "compress", "--device", "tpu")
    assert "unknown device 'tpu'" in line and "auto, cpu, cuda or cuda:N" in line


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_cuda_without_cuda_says_so_and_how_to_fix_it(tmp_path):
    line = _one_line_failure(tmp_path, "compress", "--device", "cuda")
    assert "no CUDA device is available" in line
    assert "install a CUDA build of torch" in line and "--device cpu" in line


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_train_teacher_refuses_cuda_without_cuda_alike(tmp_path):
    npz = tmp_path / "d.npz"
    line = _one_line_failure(tmp_path, "train-teacher", "--data", str(npz), "--arch", "resnet10t", "--device", "cuda:0")
    assert "no CUDA device is available" in line


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cuda:", "cuda:-1", "cpu:0", ""])
def test_malformed_names_are_refused(spec):
    with pytest.raises(InputError, match="unknown device"):
        resolve_device(spec)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_auto_is_the_cpu_on_a_machine_without_cuda():
    assert resolve_device("auto") == torch.device("cpu") == resolve_device(" CPU ")
    assert CompressConfig().device == "auto"
    assert describe(resolve_device("auto")) == {"device": "cpu", "type": "cpu", "autocast": None}


def test_auto_is_cuda_when_torch_sees_a_gpu(fake_cuda):
    fake_cuda(2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_a_gpu_index_past_the_ones_there_are_is_refused(fake_cuda):
    fake_cuda(1)
    with pytest.raises(InputError, match=r"has 1 CUDA device\(s\) \(cuda:0 … cuda:0\)"):
        resolve_device("cuda:3")


# ---------------------------------------------------------------- the CPU: same numbers as before
def _distilled(device_spec: str | None, data, tl) -> tuple[dict, list]:
    torch.manual_seed(0)
    model = TinyCNN()
    if device_spec is not None:
        model = for_training(model, resolve_device(device_spec))
    res = distill(model, data, tl, DistillConfig(batch_size=32, evaluations=3), steps=8, seed=3)
    return {k: v.clone() for k, v in to_cpu(res.model).state_dict().items()}, res.history


@pytest.mark.skipif(not NO_CUDA, reason="auto is CUDA on this machine")
def test_distillation_on_cpu_equals_the_default_bit_for_bit():
    data = make_data(96, 48)
    tl = teacher_logits(data)
    base_state, base_hist = _distilled(None, data, tl)  # as before --device existed
    for spec in ("cpu", "auto"):
        state, hist = _distilled(spec, data, tl)
        assert [h["loss"] for h in hist] == [h["loss"] for h in base_hist]
        assert all(torch.equal(state[k], base_state[k]) for k in base_state), spec


def test_no_autocast_in_training_on_the_cpu(monkeypatch):
    seen = []

    class Probe(TinyCNN):
        def forward(self, x):
            if self.training:
                seen.append((torch.is_autocast_enabled("cpu"), torch.is_autocast_enabled("cuda")))
            return super().forward(x)

    def refuse(*a, **k):
        raise AssertionError("torch.autocast entered on the CPU")

    monkeypatch.setattr(torch, "autocast", refuse)
    data = make_data(64, 32)
    distill(Probe(), data, teacher_logits(data), DistillConfig(batch_size=32, evaluations=1), steps=2)
    fit_classifier(Probe(), data.train, data.val, [Phase("full", 2, 1e-3)], batch_size=32, evaluations=1)
    assert len(seen) == 4 and not any(a or b for a, b in seen)


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_autocast_is_bf16_on_cuda_and_nothing_on_the_cpu():
    ctx = autocast(torch.device("cuda"))
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16
    assert not isinstance(autocast(torch.device("cpu")), torch.autocast)


# ---------------------------------------------------------------- moving to the device and back
def test_for_training_moves_in_place_or_copies_and_leaves_the_cpu_model_alone():
    m = TinyCNN()
    assert for_training(m, torch.device("cpu")) is m  # already there: no copy, nothing changes
    meta = torch.device("meta")  # stands in for a GPU
    copy = for_training(m, meta, copy_first=True)
    assert copy is not m and next(copy.parameters()).device == meta and next(m.parameters()).device.type == "cpu"
    moved = for_training(m, meta)
    assert moved is m and next(m.parameters()).device == meta
    cpu_model = TinyCNN()
    assert to_cpu(cpu_model) is cpu_model  # in place: what was trained is what is saved


def test_to_device_is_the_identity_where_the_tensor_is_and_async_only_from_pinned_memory(monkeypatch):
    x = torch.zeros(3)
    assert to_device(x, torch.device("cpu")) is x
    calls = []
    real_to = torch.Tensor.to

    def record(self, *args, **kwargs):
        calls.append(kwargs.get("non_blocking"))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", record)
    to_device(x, torch.device("meta"))
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda self: True)
    to_device(x, torch.device("meta"))
    assert calls == [False, True]


def test_a_torch_teacher_gets_a_copy_on_the_device_its_baseline_stays_on_the_cpu(tmp_path):
    from edgekd.models.teacher import Teacher

    module = TinyCNN().eval()
    t = Teacher("timm", None, "timm:tiny", None, module)
    x = torch.randn(4, 1, 16, 16)
    before = t.logits(x)
    assert t.run_on(torch.device("cpu"), x[:1]) is None and t.device.type == "cpu" and t.live_module is module
    assert torch.equal(t.logits(x), before)
    assert t.run_on(torch.device("meta"), x[:1]) is None  # the forward pass runs there
    assert t.device == torch.device("meta") and t.live_module is not module
    assert next(module.parameters()).device.type == "cpu"  # exported and timed as the baseline
    onnx_like = Teacher("onnx", None, "t.onnx", None, None)
    assert "ONNX Runtime" in onnx_like.run_on(torch.device("meta"), x[:1]) and onnx_like.device.type == "cpu"


def test_a_teacher_that_cannot_move_stays_on_the_cpu_and_says_why():
    from edgekd.models.teacher import Teacher

    class PinnedToCpu(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :2] + torch.ones(2, device="cpu")  # a graph with the CPU baked in

    t = Teacher("torchscript", None, "t.pt", None, PinnedToCpu())
    why = t.run_on(torch.device("meta"), torch.zeros(1, 1, 4, 4))
    assert why and "does not run on meta" in why and t.device.type == "cpu"


def test_stage_keys_of_cpu_runs_are_unchanged_and_another_device_changes_them():
    assert Run.device_key(NS(device=torch.device("cpu"))) == ()
    assert Run.device_key(NS(device=torch.device("cuda", 0))) == ("device=cuda:0",)


def test_the_device_is_one_decision_in_one_module():
    """No training module picks a device by itself: they ask edgekd._device or the model's parameters."""
    import pathlib
    import re

    root = pathlib.Path(_device.__file__).parent
    offenders = [str(p.relative_to(root)) for sub in ("distill", "prune", "quantize", "train", "pipeline")
                 for p in (root / sub).glob("*.py") if re.search(r"torch\.device\(\s*['\"]cuda|is_available\(\)",
                                                                  p.read_text())]
    assert offenders == []
