"""The teacher-signal stage asks a big torch teacher through its OpenVINO fp32 conversion, checked against it first."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from edgekd.models.teacher import Teacher
from edgekd.pipeline import teacher as stage


def _run(module: torch.nn.Module, *, val: int = 40) -> SimpleNamespace:
    torch.manual_seed(0)
    images = torch.randn(val, 1, 16, 16)
    logs: list[str] = []
    inp = SimpleNamespace(teacher=Teacher("timm", None, "timm:tiny", None, module.eval()), example=images[:1],
                          threads=1, data=SimpleNamespace(val=SimpleNamespace(images=images)))
    return SimpleNamespace(inp=inp, log=logs.append, logs=logs)


def _net() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 3))


def test_only_a_big_enough_ask_of_a_torch_teacher_on_the_cpu_goes_through_openvino(monkeypatch):
    run = _run(_net())
    macs = 16 * 16 * 8 * 9 + 8 * 3  # conv + linear, as Torch-Pruning counts them (order of magnitude is enough)
    monkeypatch.setattr(stage, "FILE_TEACHER_MIN_MACS", 1000 * macs)
    assert not stage.answered_by_file(run, 10, online=False)
    assert stage.answered_by_file(run, 10_000, online=False)
    assert not stage.answered_by_file(run, 10_000, online=True)  # online: the live module answers every batch
    onnx_teacher = _run(_net())
    onnx_teacher.inp.teacher = Teacher("onnx", None, "t.onnx", None, None)
    assert not stage.answered_by_file(onnx_teacher, 10_000, online=False)


def test_the_openvino_answers_agree_with_the_torch_teacher(tmp_path):
    run = _run(_net())
    logits, answered = stage.file_teacher(run, tmp_path)
    x = torch.randn(150, 1, 16, 16)  # more than one FILE_TEACHER_BATCH
    with torch.inference_mode():
        expected = run.inp.teacher.module(x)
    got = logits(x)
    assert answered["answered_by"] == "openvino-fp32" and answered["agreement"]["ok"]
    assert got.shape == (150, 3) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-4, rtol=1e-4)


def test_a_conversion_that_disagrees_leaves_torch_answering(tmp_path):
    class Odd(torch.nn.Module):  # data-dependent Python control flow: the traced conversion keeps one branch
        def forward(self, x):
            return x.mean((2, 3)).repeat(1, 2) * (1.0 if float(x[0].sum()) > 0 else -1.0)

    run = _run(Odd())
    run.inp.example = -run.inp.data.val.images[:1].abs()  # traced on the negative branch
    run.inp.data.val.images[0] = run.inp.data.val.images[0].abs()  # the check batch takes the positive one
    logits, answered = stage.file_teacher(run, tmp_path)
    assert answered["answered_by"] == "timm" and "disagreed" in answered["answered_by_why"]
    assert logits == run.inp.teacher.logits and run.logs


def test_a_conversion_that_fails_leaves_torch_answering(tmp_path, monkeypatch):
    from edgekd.errors import LoweringError
    from edgekd.lower import get_backend

    def fail(*a, **k):
        raise LoweringError("OpenVINO cannot convert this model")

    monkeypatch.setattr(get_backend("openvino"), "export_openvino", fail)
    run = _run(_net())
    logits, answered = stage.file_teacher(run, tmp_path)
    assert answered["answered_by"] == "timm" and "cannot convert this model" in answered["answered_by_why"]
    assert logits == run.inp.teacher.logits
