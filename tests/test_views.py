"""Augmentation views for distillation: label-preserving, and the teacher runs once per view."""
from __future__ import annotations

import pytest
import torch

from edgekd.config import Preprocessing
from edgekd.data._base import Dataset, Split
from edgekd.distill import TeacherLogits
from edgekd.distill.views import VIEWS, apply_view, check_views
from edgekd.errors import InputError


def test_every_view_keeps_the_shape_and_identity_is_identity():
    x = torch.randn(3, 1, 32, 32)
    for name in VIEWS:
        assert apply_view(x, name).shape == x.shape
    assert torch.equal(apply_view(x, "identity"), x)
    assert torch.equal(apply_view(apply_view(x, "hflip"), "hflip"), x)


def test_shifts_move_content_by_a_sixteenth_and_replicate_the_border():
    x = torch.zeros(1, 1, 32, 32)
    x[..., 10, 10] = 1.0
    right = apply_view(x, "shift_right")
    assert right[..., 10, 12] == 1.0 and right.sum() == 1.0  # 32 // 16 = 2 pixels
    down = apply_view(x, "shift_down")
    assert down[..., 12, 10] == 1.0
    ramp = torch.arange(32.0).expand(1, 1, 32, 32)
    left = apply_view(ramp, "shift_left")
    assert torch.equal(left[..., :, -1], ramp[..., :, -1])  # border replicated, no black band


def test_views_must_start_with_identity_and_exist():
    with pytest.raises(InputError, match="start with 'identity'"):
        check_views(("hflip",))
    with pytest.raises(InputError, match="did you mean 'hflip'"):
        check_views(("identity", "hflip2"))


def test_the_teacher_runs_once_per_view_and_targets_are_aligned():
    imgs = torch.randn(8, 1, 16, 16)
    data = Dataset(Split(imgs, torch.arange(8) % 2), Split(imgs[:4], torch.arange(4) % 2),
                   Split(imgs[:4], torch.arange(4) % 2), 2, 1, (16, 16), ["a", "b"], "npz", Preprocessing(channels=1))
    calls = []

    def teacher(x):
        calls.append(x.shape[0])
        return torch.stack([x.mean(dim=(1, 2, 3)), x[..., :, :8].mean(dim=(1, 2, 3))], dim=1)

    tl = TeacherLogits.compute(teacher, data, ("identity", "hflip", "shift_up"))
    assert calls == [8, 8, 8, 4]  # each train view once, then val once
    assert tl.train_views.shape == (3, 8, 2)
    assert torch.equal(tl.train, tl.train_views[0])
    assert torch.allclose(tl.train_views[1], teacher(apply_view(imgs, "hflip")))
