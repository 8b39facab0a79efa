"""Pixel-wise KD loss: a hand-computed 2×2 case, the alpha/T conventions, and the -1 (unlabelled) rule."""
from __future__ import annotations

import math

import pytest
import torch

from edgekd.distill.loss import kd_loss
from edgekd.distill.seg_loss import dice_loss, seg_kd_loss
from edgekd.errors import InputError

LN3 = math.log(3.0)


def _logits(margins: list[float]) -> torch.Tensor:
    """1×2×2×2 logits: class 0 at 0, class 1 at the given margin per pixel (row-major)."""
    z = torch.tensor(margins, dtype=torch.float64).view(1, 1, 2, 2)
    return torch.cat([torch.zeros_like(z), z], dim=1)


def test_a_2x2_case_computed_by_hand():
    student = _logits([LN3, 0.0, -LN3, 0.0])  # p(class 1) = 3/4, 1/2, 1/4, 1/2
    teacher = _logits([0.0, 0.0, 0.0, 0.0])  # uniform at every pixel
    masks = torch.tensor([[[1, 1], [0, 0]]])
    # CE: -ln 3/4, -ln 1/2, -ln 3/4, -ln 1/2, mean over the 4 pixels
    ce = (2 * math.log(4 / 3) + 2 * math.log(2)) / 4
    # Dice of class 1: 2·(3/4 + 1/2) / (Σp = 2 + Σg = 2) = 5/8
    dice = 1 - 5 / 8
    # KL(uniform ‖ p) at T = 2: margins ±ln3/2 give p0·p1 = √3/(1+√3)²; the two zero margins give 0
    kl_pixel = -math.log(2) - 0.5 * math.log(math.sqrt(3) / (1 + math.sqrt(3)) ** 2)
    kl = 2 * kl_pixel / 4
    expected = 0.5 * (ce + dice) + 0.5 * 4 * kl
    got = seg_kd_loss(student, teacher, masks, temperature=2.0, alpha=0.5)
    assert float(got) == pytest.approx(expected, rel=1e-9)
    assert float(dice_loss(student, masks)) == pytest.approx(dice, rel=1e-9)


def test_zero_when_the_student_is_the_teacher_and_alpha_is_zero():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(2, 3, 8, 8, generator=g)
    masks = torch.randint(0, 3, (2, 8, 8), generator=g)
    assert float(seg_kd_loss(t.clone(), t, masks, temperature=4.0, alpha=0.0)) == pytest.approx(0.0, abs=1e-7)
    assert float(seg_kd_loss(t + torch.randn(t.shape, generator=g), t, masks, temperature=4.0, alpha=0.0)) > 1e-3


def test_one_pixel_images_reduce_to_the_classification_loss():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    y = torch.randint(0, 3, (6,), generator=g)
    soft = seg_kd_loss(s.view(6, 3, 1, 1), t.view(6, 3, 1, 1), y.view(6, 1, 1), temperature=3.0, alpha=0.0)
    assert float(soft) == pytest.approx(float(kd_loss(s, t, y, temperature=3.0, alpha=0.0)), rel=1e-6)
    ce = seg_kd_loss(s.view(6, 3, 1, 1), t.view(6, 3, 1, 1), y.view(6, 1, 1), temperature=3.0, alpha=1.0)
    assert float(ce) == pytest.approx(float(kd_loss(s, t, y, temperature=3.0, alpha=1.0) + dice_loss(
        s.view(6, 3, 1, 1), y.view(6, 1, 1))), rel=1e-6)


def test_unlabelled_images_get_no_hard_terms_and_scale_them_by_the_labelled_fraction():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(2, 2, 4, 4, generator=g)
    t = torch.randn(2, 2, 4, 4, generator=g)
    masks = torch.randint(0, 2, (2, 4, 4), generator=g)
    masks[0, 0, 0] = 1
    half = masks.clone()
    half[1] = -1  # the second image has no label
    hard_one = seg_kd_loss(s[:1], t[:1], masks[:1], temperature=2.0, alpha=1.0)
    hard_half = seg_kd_loss(s, t, half, temperature=2.0, alpha=1.0)
    assert float(hard_half) == pytest.approx(0.5 * float(hard_one), rel=1e-6)
    other = s.clone()
    other[1] = torch.randn(2, 4, 4, generator=g)  # what the student says on the unlabelled image
    assert float(seg_kd_loss(other, t, half, temperature=2.0, alpha=1.0)) == pytest.approx(float(hard_half), rel=1e-6)
    none = torch.full_like(masks, -1)
    assert float(seg_kd_loss(s, t, none, temperature=2.0, alpha=1.0)) == 0.0
    mixed = seg_kd_loss(s, t, none, temperature=2.0, alpha=0.3)
    assert float(mixed) == pytest.approx(float(0.7 * seg_kd_loss(s, t, none, temperature=2.0, alpha=0.0)), rel=1e-6)


def test_unlabelled_pixels_are_left_out_of_ce_and_dice():
    s = _logits([LN3, 0.0, -LN3, 5.0])
    masks = torch.tensor([[[1, 1], [0, -1]]])
    # the last pixel is unlabelled: CE over 3 pixels, divided by all 4; Dice over the first 3
    ce = (math.log(4 / 3) + math.log(2) + math.log(4 / 3)) / 4
    dice = 1 - 2 * (3 / 4 + 1 / 2) / ((3 / 4 + 1 / 2 + 1 / 4) + 2)
    got = seg_kd_loss(s, s, masks, temperature=1.0, alpha=1.0)
    assert float(got) == pytest.approx(ce + 0.75 * dice, rel=1e-9)


def test_dice_skips_classes_absent_from_the_labels():
    s = _logits([1.0, 2.0, 3.0, 4.0])
    assert float(dice_loss(s, torch.zeros(1, 2, 2, dtype=torch.long))) == 0.0  # background only: no Dice
    assert float(dice_loss(s, torch.full((1, 2, 2), -1))) == 0.0
    assert float(dice_loss(s, torch.ones(1, 2, 2, dtype=torch.long))) > 0.0


def test_the_teacher_gets_no_gradient():
    s = torch.randn(1, 2, 4, 4, requires_grad=True)
    t = torch.randn(1, 2, 4, 4, requires_grad=True)
    seg_kd_loss(s, t, torch.zeros(1, 4, 4, dtype=torch.long), temperature=2.0, alpha=0.5).backward()
    assert s.grad is not None and t.grad is None


@pytest.mark.parametrize("masks, kw, match", [
    (torch.full((1, 4, 4), 2), {}, "value 2"),
    (torch.full((1, 4, 4), -2), {}, "value -2"),
    (torch.zeros(1, 4, 4), {}, "integer"),
    (torch.zeros(1, 4, 5, dtype=torch.long), {}, "N×H×W"),
    (torch.zeros(1, 4, 4, dtype=torch.long), {"temperature": 0.0}, "temperature"),
    (torch.zeros(1, 4, 4, dtype=torch.long), {"alpha": 1.5}, "alpha"),
])
def test_bad_inputs_fail_in_one_line(masks, kw, match):
    args = {"temperature": 2.0, "alpha": 0.5} | kw
    with pytest.raises(InputError, match=match) as e:
        seg_kd_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), masks, **args)
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="N×K×H×W"):
        seg_kd_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long),
                    temperature=2.0, alpha=0.5)
