"""Distillation: the KD loss, the step budget, checkpoint selection and the training loop."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.config import DistillConfig, Preprocessing
from edgekd.data._base import Dataset, Split
from edgekd.distill import (
    DistillResult,
    TeacherSignal,
    distill,
    kd_loss,
    kd_loss_mixed,
    plan,
    predict_logits,
)
from edgekd.distill.schedule import MAX_STEPS, MIN_STEPS, lr_factor
from edgekd.distill.trainer import select_checkpoint
from edgekd.errors import DataError, InputError, TeacherError
from edgekd.metrics.classification import roc_auc

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


def teacher_logits(data: Dataset) -> TeacherSignal:
    t = SquareTeacher().eval()
    return TeacherSignal.plain(data.train.images, data.train.labels, predict_logits(t, data.train.images),
                               predict_logits(t, data.val.images))


@pytest.fixture(scope="module")
def data() -> Dataset:
    return make_data()


@pytest.fixture(scope="module")
def tl(data: Dataset) -> TeacherSignal:
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


# ---------------------------------------------------------------- kd_loss_mixed
def test_mixed_loss_without_mixing_is_the_kd_loss():
    s, t, y = torch.randn(8, 3), torch.randn(8, 3), torch.randint(0, 3, (8,))
    got = kd_loss_mixed(s, t, y, y, torch.ones(8), temperature=4.0, alpha=0.3)
    assert torch.allclose(got, kd_loss(s, t, y, temperature=4.0, alpha=0.3), atol=1e-6)


def test_mixed_loss_mixes_the_labels_by_the_image_weights():
    s, t = torch.randn(6, 2), torch.randn(6, 2)
    y, y2, lam = torch.tensor([0, 1, 0, 1, 0, 1]), torch.tensor([1, 1, 0, 0, 1, 0]), torch.rand(6)
    hard = (lam * F.cross_entropy(s, y, reduction="none") + (1 - lam) * F.cross_entropy(s, y2, reduction="none")).mean()
    assert torch.allclose(kd_loss_mixed(s, t, y, y2, lam, temperature=2.0, alpha=1.0), hard, atol=1e-6)


def test_unlabelled_images_get_no_cross_entropy():
    s, t = torch.randn(4, 2), torch.randn(4, 2)
    y = torch.tensor([-1, -1, -1, -1])
    assert kd_loss_mixed(s, t, y, y, torch.ones(4), temperature=4.0, alpha=1.0) == 0
    soft = kd_loss(s, t, torch.zeros(4, dtype=torch.long), temperature=4.0, alpha=0.0)
    assert torch.allclose(kd_loss_mixed(s, t, y, y, torch.ones(4), temperature=4.0, alpha=0.3), 0.7 * soft)


# ---------------------------------------------------------------- the step budget
def test_small_and_large_sets_get_at_least_the_minimum_budget():
    assert plan(550, 64, None).distill == MIN_STEPS
    assert plan(5000, 64, None).distill == MIN_STEPS  # 12 epochs of 5000 = 948 steps < the minimum
    assert plan(50_000, 64, None).distill == 12 * 782
    assert plan(10_000_000, 64, None).distill == MAX_STEPS


def test_explicit_budget_and_stage_shares():
    b = plan(550, 64, 1000)
    assert (b.distill, b.finetune, b.recovery, b.qat) == (1000, 80, 300, 100)
    assert not b.derived and b.to_dict()["source"] == "--max-steps"
    b = plan(550, 64, 1000, finetune=5, recovery=0, qat=0)
    assert (b.finetune, b.recovery, b.qat) == (5, 0, 0)
    assert plan(550, 64, None).to_dict()["distill_epochs_equivalent"] == pytest.approx(MIN_STEPS / 9, abs=0.1)


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_bad_step_budget_is_one_clear_error(bad):
    with pytest.raises(InputError, match="--max-steps must be an integer >= 1"):
        plan(100, 64, bad)


def test_learning_rate_warms_up_then_decays_to_zero_over_the_whole_budget():
    f = [lr_factor(s, 1000, 0.05) for s in range(1000)]
    assert f[0] == pytest.approx(1 / 50) and f[49] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[50:], f[51:]))  # monotone after the warm-up
    assert f[525] == pytest.approx(0.5, abs=0.01) and f[-1] < 1e-4


# ---------------------------------------------------------------- checkpoint selection
def test_selection_prefers_the_checkpoint_closest_to_the_teacher():
    evals = [{"step": 100, "val_kl": 0.30, "val_auc": 0.95}, {"step": 200, "val_kl": 0.10, "val_auc": 0.955},
             {"step": 300, "val_kl": 0.20, "val_auc": 0.96}]
    assert select_checkpoint(evals)["step"] == 200


def test_selection_guards_against_a_checkpoint_that_ranks_cases_worse():
    evals = [{"step": 100, "val_kl": 0.30, "val_auc": 0.95}, {"step": 200, "val_kl": 0.10, "val_auc": 0.90}]
    assert select_checkpoint(evals)["step"] == 100


# ---------------------------------------------------------------- distill
def test_distill_learns_and_returns_the_selected_checkpoint(data, tl):
    cfg = DistillConfig(batch_size=32, lr=5e-3, evaluations=6)
    res = distill(TinyCNN(), data, tl, cfg, steps=36, seed=0)
    assert isinstance(res, DistillResult)
    assert res.steps_run == 36 and res.steps_planned == 36
    assert res.best_val_auc > res.initial_val_auc + 0.2 and res.best_val_auc > 0.9
    assert [h["step"] for h in res.history] == [0, 6, 12, 18, 24, 30, 36]
    assert set(res.history[1]) >= {"step", "loss", "val_kl", "val_auc", "lr", "seconds"}
    assert not res.model.training
    chosen = next(h for h in res.history if h["step"] == res.best_step)
    assert res.best_step >= 0.6 * 36  # nothing before the minimum budget is kept
    got = predict_logits(res.model, data.val.images)
    assert roc_auc(got.numpy(), data.val.labels.numpy()) == pytest.approx(chosen["val_auc"], abs=1e-12)


def test_no_early_stop_before_the_minimum_budget(data, tl):
    # lr=0 and no BatchNorm: the model never changes, so val KL never improves
    cfg = DistillConfig(batch_size=64, patience=1, evaluations=10, min_fraction=0.5)
    res = distill(TinyCNN(bn=False), data, tl, cfg, steps=40, lr=0.0)
    assert res.steps_run == 24  # evaluations at 4, 8, ... ; first eligible at 20, the next one (24) stops it
    assert res.history[-1]["step"] == 24


def test_a_short_run_evaluates_at_most_once_per_two_val_splits_of_trained_images(data, tl):
    # 40 steps of 32 with 20 evaluations asked: one every 2 steps would score the 96 val images after every 64
    # trained ones; the gap is 2 × 96 / 32 = 6 steps instead
    cfg = DistillConfig(batch_size=32, evaluations=20, patience=100)
    res = distill(TinyCNN(), data, tl, cfg, steps=40)
    assert [h["step"] for h in res.history] == [0, 6, 12, 18, 24, 30, 36, 40]
    long = distill(TinyCNN(), data, tl, DistillConfig(batch_size=32, evaluations=4, patience=100), steps=40)
    assert [h["step"] for h in long.history] == [0, 10, 20, 30, 40]  # rarer than the gap: as asked


def test_a_fine_tune_never_returns_something_further_from_the_teacher_than_its_start(data, tl):
    trained = distill(TinyCNN(), data, tl, DistillConfig(batch_size=32), steps=24).model
    start = copy.deepcopy(trained.state_dict())
    anti = TeacherSignal.plain(data.train.images, data.train.labels, -tl.clean, tl.val)  # pulls away from the teacher
    res = distill(trained, data, anti, DistillConfig(batch_size=32, alpha=0.0, evaluations=4), steps=24,
                  keep_start=True)
    assert res.best_step == 0
    assert all(torch.equal(start[k], v) for k, v in res.model.state_dict().items())


def test_zero_steps_measures_the_start(data, tl):
    res = distill(TinyCNN(), data, tl, DistillConfig(), steps=0)
    assert res.steps_run == 0 and len(res.history) == 1
    assert res.best_val_auc == res.initial_val_auc


def test_same_seed_same_history(data, tl):
    cfg = DistillConfig(batch_size=32, evaluations=3)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append([h["loss"] for h in distill(TinyCNN(), data, tl, cfg, steps=12, seed=7).history])
    assert runs[0] == runs[1]


def test_distill_rejects_misaligned_teacher_logits(data, tl):
    bad = TeacherSignal.plain(data.train.images, data.train.labels, tl.clean[:-1], tl.val)
    with pytest.raises(TeacherError, match="recompute"):
        distill(TinyCNN(), data, bad, DistillConfig(), steps=1)


def test_distill_rejects_student_with_wrong_class_count(data, tl):
    with pytest.raises(InputError, match="num_classes=2"):
        distill(TinyCNN(k=3), data, tl, DistillConfig(), steps=1)


def test_distill_rejects_single_class_val(data, tl):
    one = Split(data.val.images, torch.zeros_like(data.val.labels))
    d = Dataset(data.train, one, data.test, 2, 1, (32, 32), ["a", "b"], "synthetic", Preprocessing(channels=1))
    with pytest.raises(DataError, match="two classes"):
        distill(TinyCNN(), d, tl, DistillConfig(), steps=1)


@pytest.mark.parametrize("kw", [{"steps": -1}, {"lr": -1.0}, {"steps": 1.5}])
def test_distill_rejects_bad_overrides(data, tl, kw):
    kw = {"steps": 1, **kw}
    with pytest.raises(InputError):
        distill(TinyCNN(), data, tl, DistillConfig(), **kw)


@pytest.mark.parametrize("cfg", [DistillConfig(patience=0), DistillConfig(batch_size=1), DistillConfig(min_fraction=1.5),
                                 DistillConfig(evaluations=0)])
def test_distill_rejects_bad_config(data, tl, cfg):
    with pytest.raises(InputError):
        distill(TinyCNN(), data, tl, cfg, steps=1)


def test_unlabelled_images_teach_the_student_through_the_teacher_alone(data):
    """4 labelled images and 188 unlabelled ones: the student learns the task from the teacher's soft targets."""
    from edgekd.distill.source import Pool

    t = SquareTeacher().eval()
    few = Split(data.train.images[:4], data.train.labels[:4])
    d = Dataset(few, data.val, data.test, 2, 1, (32, 32), ["a", "b"], "synthetic", Preprocessing(channels=1))
    pool = Pool.of(few.images, few.labels, data.train.images[4:])
    assert pool.labelled == 4 and (pool.labels[4:] == -1).all()
    sig = TeacherSignal("plain", pool, predict_logits(t, data.val.images), predict_logits(t, pool.images))
    res = distill(TinyCNN(), d, sig, DistillConfig(batch_size=32, lr=5e-3, evaluations=4), steps=40, seed=0)
    assert res.best_val_auc > 0.9
