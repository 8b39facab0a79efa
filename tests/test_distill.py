"""Distillation: the KD loss and the training loop (early stopping, best-state restore, seeding)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.bench.metrics import roc_auc
from edgekd.config import DistillConfig, Preprocessing
from edgekd.data._base import Dataset, Split
from edgekd.distill import DistillResult, TeacherLogits, distill, kd_loss, predict_logits
from edgekd.errors import DataError, InputError, TeacherError

from ._square import square_dataset


# ---------------------------------------------------------------- tiny learnable task
def make_data(n_train: int = 192, n_val: int = 96, seed: int = 0) -> Dataset:
    return square_dataset(n_train, n_val, 32, seed)


class SquareTeacher(nn.Module):
    """A 'trained' teacher by construction: box filter, global max, a logit pair around a threshold."""

    def __init__(self) -> None:
        super().__init__()
        self.box = nn.Conv2d(1, 1, 6, bias=False)
        nn.init.constant_(self.box.weight, 1 / 36)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = 6.0 * (self.box(x).amax(dim=(1, 2, 3)) - 0.75)
        return torch.stack([-s, s], dim=1)


class TinyCNN(nn.Module):
    def __init__(self, bn: bool = True, k: int = 2) -> None:
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if bn else (lambda c: nn.Identity())
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), norm(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, padding=1), norm(16), nn.ReLU(),
                                      nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(16, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def teacher_logits(data: Dataset) -> TeacherLogits:
    t = SquareTeacher().eval()
    return TeacherLogits(predict_logits(t, data.train.images), predict_logits(t, data.val.images))


@pytest.fixture(scope="module")
def data() -> Dataset:
    return make_data()


@pytest.fixture(scope="module")
def tl(data: Dataset) -> TeacherLogits:
    return teacher_logits(data)


# ---------------------------------------------------------------- kd_loss
def test_teacher_is_a_good_teacher(data, tl):
    assert roc_auc(tl.val.numpy(), data.val.labels.numpy()) > 0.95


def test_kd_loss_is_cross_entropy_when_alpha_is_one():
    s, t, y = torch.randn(8, 3), torch.randn(8, 3), torch.randint(0, 3, (8,))
    got = kd_loss(s, t, y, temperature=4.0, alpha=1.0)
    assert torch.allclose(got, F.cross_entropy(s, y))


def test_kd_loss_is_scaled_kl_when_alpha_is_zero():
    s, t, y = torch.randn(8, 3), torch.randn(8, 3), torch.randint(0, 3, (8,))
    T = 3.0
    p_t, p_s = torch.softmax(t / T, 1), torch.softmax(s / T, 1)
    by_hand = T * T * (p_t * (p_t.log() - p_s.log())).sum(1).mean()
    assert torch.allclose(kd_loss(s, t, y, temperature=T, alpha=0.0), by_hand, atol=1e-6)


def test_kd_loss_mixes_both_terms():
    s, t, y = torch.randn(8, 2), torch.randn(8, 2), torch.randint(0, 2, (8,))
    ce = kd_loss(s, t, y, temperature=2.0, alpha=1.0)
    kl = kd_loss(s, t, y, temperature=2.0, alpha=0.0)
    assert torch.allclose(kd_loss(s, t, y, temperature=2.0, alpha=0.25), 0.25 * ce + 0.75 * kl)


def test_kd_loss_kl_is_zero_for_equal_logits():
    s = torch.randn(8, 4)
    assert kd_loss(s, s.clone(), torch.zeros(8, dtype=torch.long), temperature=4.0, alpha=0.0).abs() < 1e-6


def test_kd_loss_gradient_reaches_student_only():
    s, t = torch.randn(4, 2, requires_grad=True), torch.randn(4, 2, requires_grad=True)
    kd_loss(s, t, torch.tensor([0, 1, 0, 1]), temperature=4.0, alpha=0.3).backward()
    assert s.grad is not None and t.grad is None


@pytest.mark.parametrize("temperature, alpha", [(0.0, 0.5), (-1.0, 0.5), (math.nan, 0.5), (4.0, 1.5), (4.0, -0.1)])
def test_kd_loss_rejects_bad_parameters(temperature, alpha):
    s = torch.randn(2, 2)
    with pytest.raises(InputError):
        kd_loss(s, s, torch.tensor([0, 1]), temperature=temperature, alpha=alpha)


def test_kd_loss_rejects_mismatched_logits():
    with pytest.raises(InputError, match="same K"):
        kd_loss(torch.randn(2, 3), torch.randn(2, 2), torch.tensor([0, 1]), temperature=4.0, alpha=0.3)


# ---------------------------------------------------------------- distill
def test_distill_improves_val_auc_and_restores_best(data, tl):
    cfg = DistillConfig(epochs=3, batch_size=32, lr=5e-3)
    res = distill(TinyCNN(), data, tl, cfg, seed=0)
    assert isinstance(res, DistillResult)
    assert res.best_val_auc > res.initial_val_auc + 0.2
    assert res.best_val_auc > 0.9
    assert res.best_val_auc == max([res.initial_val_auc] + [h["val_auc"] for h in res.history])
    assert set(res.history[0]) >= {"epoch", "loss", "val_auc", "seconds"}
    assert not res.model.training
    # the returned model is the best epoch's, not the last one's
    assert roc_auc(predict_logits(res.model, data.val.images).numpy(), data.val.labels.numpy()) == pytest.approx(
        res.best_val_auc, abs=1e-12)


def test_best_state_is_restored_not_the_last_epoch(data, tl):
    trained = distill(TinyCNN(), data, tl, DistillConfig(epochs=2, batch_size=32)).model
    start = copy.deepcopy(trained.state_dict())
    # distilling toward an inverted teacher makes every epoch worse than the start
    anti = TeacherLogits(-tl.train, -tl.val)
    res = distill(trained, data, anti, DistillConfig(epochs=3, batch_size=32, alpha=0.0, patience=5))
    assert res.history[-1]["val_auc"] < res.best_val_auc - 0.5
    assert res.best_val_auc == res.initial_val_auc
    got = roc_auc(predict_logits(res.model, data.val.images).numpy(), data.val.labels.numpy())
    assert got == pytest.approx(res.best_val_auc, abs=1e-12)
    assert all(torch.equal(start[k], v) for k, v in res.model.state_dict().items())


def test_early_stopping_stops_after_patience(data, tl):
    # lr=0 and no BatchNorm: the model never changes, so val AUC never improves on the start
    cfg = DistillConfig(epochs=10, batch_size=64, patience=3)
    res = distill(TinyCNN(bn=False), data, tl, cfg, lr=0.0)
    assert res.epochs_run == 3 == len(res.history)
    assert res.best_val_auc == res.initial_val_auc


def test_overrides_and_zero_epochs(data, tl):
    res = distill(TinyCNN(), data, tl, DistillConfig(epochs=50), epochs=0)
    assert res.epochs_run == 0 and res.history == []
    assert res.best_val_auc == res.initial_val_auc


def test_same_seed_same_history(data, tl):
    cfg = DistillConfig(epochs=2, batch_size=32, patience=5)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append([h["loss"] for h in distill(TinyCNN(), data, tl, cfg, seed=7).history])
    assert runs[0] == runs[1]


def test_distill_rejects_misaligned_teacher_logits(data, tl):
    bad = TeacherLogits(tl.train[:-1], tl.val)
    with pytest.raises(TeacherError, match="recompute"):
        distill(TinyCNN(), data, bad, DistillConfig(epochs=1))


def test_distill_rejects_student_with_wrong_class_count(data, tl):
    with pytest.raises(InputError, match="num_classes=2"):
        distill(TinyCNN(k=3), data, tl, DistillConfig(epochs=1))


def test_distill_rejects_single_class_val(data, tl):
    one = Split(data.val.images, torch.zeros_like(data.val.labels))
    d = Dataset(data.train, one, data.test, 2, 1, (32, 32), ["a", "b"], "synthetic", Preprocessing(channels=1))
    with pytest.raises(DataError, match="two classes"):
        distill(TinyCNN(), d, tl, DistillConfig(epochs=1))


@pytest.mark.parametrize("kw", [{"epochs": -1}, {"lr": -1.0}, {"patience": 0}])
def test_distill_rejects_bad_overrides(data, tl, kw):
    with pytest.raises(InputError):
        distill(TinyCNN(), data, tl, DistillConfig(epochs=1), **kw)
