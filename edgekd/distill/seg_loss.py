"""The pixel-wise knowledge-distillation loss for segmentation.

``alpha·(CE + Dice)(student, masks) + (1 − alpha)·T²·KL(softmax(teacher/T) ‖ softmax(student/T))``,
the classification loss (:mod:`edgekd.distill.loss`) applied at every pixel: same ``alpha``
(weight of the hard-label terms), same temperature ``T`` and T² factor. Each pixel is one sample:

* **KL**: summed over the K classes, averaged over all N·H·W pixels (the per-pixel ``batchmean``).
  The teacher answers for every pixel, labelled or not.
* **CE**: summed over the labelled pixels, divided by all N·H·W pixels. A mask value of -1 marks a
  pixel (or a whole image) without a label, like the Pool label -1 of classification: it gets no
  CE and no Dice, and the hard terms shrink with the labelled fraction, so an unlabelled image is
  taught by the teacher alone and ``alpha`` keeps its meaning in a mixed batch.
* **Dice**: soft Dice of the student's probabilities (T = 1) against the one-hot masks, pooled
  over the batch's labelled pixels ("batch Dice": an image without a lesion has no Dice of its
  own), for each foreground class 1..K−1 present in the labelled masks:
  ``1 − mean_c 2·Σ p_c·g_c / (Σ p_c + Σ g_c)``, times the labelled fraction. No smoothing term is
  needed (a present class has Σ g_c ≥ 1); when no foreground pixel is labelled the Dice term is 0
  (false positives are then penalised by the CE, as in the metrics, which also leave background
  out of the mean).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError
from .loss import check_kd_params

UNLABELLED = -1  # mask value of a pixel without a label (soft targets only)


def _check_shapes(student: torch.Tensor, teacher: torch.Tensor, masks: torch.Tensor) -> None:
    if student.ndim != 4 or student.shape != teacher.shape:
        raise InputError(
            f"student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} must both be "
            "N×K×H×W with the same K and size: the student needs as many outputs as the teacher has classes"
        )
    n, k, h, w = student.shape
    if masks.shape != (n, h, w):
        raise InputError(f"masks must be N×H×W class indices of shape ({n}, {h}, {w}), got {tuple(masks.shape)}")
    if masks.dtype.is_floating_point or masks.dtype == torch.bool:
        raise InputError(f"masks must hold integer class indices (int64), got {masks.dtype}: pass mask.long()")
    if masks.numel() and (int(masks.min()) < UNLABELLED or int(masks.max()) >= k):
        bad = int(masks.min()) if int(masks.min()) < UNLABELLED else int(masks.max())
        raise InputError(f"masks hold the value {bad}, outside 0..{k - 1} (or -1 for unlabelled): pass class "
                         f"indices of the {k} classes")


def dice_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``1 − mean Dice`` over the foreground classes present in the labelled pixels (batch Dice).

    Pixels with mask -1 are left out; 0 when no foreground pixel is labelled. Not scaled by the
    labelled fraction (:func:`seg_kd_loss` does that).
    """
    k = logits.shape[1]
    labelled = masks >= 0
    if k < 2 or not labelled.any():
        return logits.new_zeros(())
    dtype = torch.promote_types(logits.dtype, torch.float32)  # half precision: Dice sums in float32
    probs = logits.to(dtype).softmax(dim=1).movedim(1, -1)[labelled]  # P×K, labelled pixels only
    truth = F.one_hot(masks[labelled].long(), k).to(probs.dtype)  # P×K
    present = truth[:, 1:].sum(dim=0) > 0
    if not present.any():
        return logits.new_zeros(())
    inter = (probs * truth).sum(dim=0)[1:][present]
    denom = (probs.sum(dim=0) + truth.sum(dim=0))[1:][present]
    return (1.0 - (2.0 * inter / denom).mean()).to(logits.dtype)


def seg_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    masks: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Scalar pixel-wise KD loss: N×K×H×W student and teacher logits, N×H×W int64 masks (-1: unlabelled).

    Teacher logits carry no gradient. ``alpha == 0`` ignores the masks' labels (pure distillation).
    """
    check_kd_params(temperature, alpha)
    _check_shapes(student_logits, teacher_logits, masks)
    n, k, h, w = student_logits.shape
    pixels = n * h * w
    t = float(temperature)
    hard = student_logits.new_zeros(())
    if alpha > 0 and pixels:
        labelled = masks >= 0
        fraction = float(labelled.sum()) / pixels
        ce = F.cross_entropy(student_logits, masks.long(), ignore_index=UNLABELLED, reduction="sum") / pixels
        hard = ce + fraction * dice_loss(student_logits, masks)
    if alpha >= 1:
        return hard
    s = F.log_softmax(student_logits / t, dim=1)
    q = F.log_softmax(teacher_logits.detach().to(student_logits.dtype) / t, dim=1)
    soft = F.kl_div(s, q, reduction="sum", log_target=True) / max(1, pixels)
    return alpha * hard + (1.0 - alpha) * (t * t) * soft
