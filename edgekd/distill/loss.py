"""The knowledge-distillation loss (Hinton et al., 2015).

``alpha·CE(student, labels) + (1 − alpha)·T²·KL(softmax(teacher/T) ‖ softmax(student/T))``.
The T² factor keeps the gradient of the soft term on the same scale as the hard term when T
changes, so ``alpha`` means the same thing at every temperature.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import InputError


def check_kd_params(temperature: float, alpha: float) -> None:
    """Reject a temperature or alpha the loss is not defined for (InputError, one line)."""
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise InputError(f"distillation temperature must be a number > 0, got {temperature!r}: try 4.0")
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise InputError(
            f"distillation alpha must be in [0, 1] (weight of the hard-label term), got {alpha!r}: try 0.3"
        )


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Scalar KD loss for a batch: N×K student and teacher logits, N int64 labels.

    The KL term is averaged over the batch (``batchmean``), which is the mathematically correct
    KL divergence per sample; ``mean`` would also divide by K. Teacher logits carry no gradient.
    """
    check_kd_params(temperature, alpha)
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise InputError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "must both be N×K with the same K: the student needs as many outputs as the teacher has classes"
        )
    if labels.shape != student_logits.shape[:1]:
        raise InputError(f"labels must have shape ({student_logits.shape[0]},), got {tuple(labels.shape)}")
    t = float(temperature)
    teacher_logits = teacher_logits.detach().to(student_logits.dtype)
    hard = F.cross_entropy(student_logits, labels.long()) if alpha > 0 else student_logits.new_zeros(())
    if alpha >= 1:
        return hard
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * hard + (1.0 - alpha) * (t * t) * soft


def kd_loss_mixed(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    partner_labels: torch.Tensor,
    lam: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """KD loss for a batch that may hold mixed (mixup) and unlabelled images.

    The soft term is the KL to the teacher's logits *on the mixed image itself* (the teacher saw
    it too). The hard term mixes the two labels with the image weights ``lam``; a label of -1
    (an unlabelled image) contributes no CE, so unlabelled images are taught by the teacher alone.
    Both terms are averaged over the whole batch, so ``alpha`` keeps its meaning.
    """
    check_kd_params(temperature, alpha)
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise InputError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "must both be N×K with the same K: the student needs as many outputs as the teacher has classes"
        )
    n = student_logits.shape[0]
    t = float(temperature)
    hard = student_logits.new_zeros(())
    if alpha > 0:
        lam = lam.to(student_logits.dtype)
        for y, w in ((labels, lam), (partner_labels, 1.0 - lam)):
            known = y >= 0
            if known.any():
                ce = F.cross_entropy(student_logits[known], y[known].long(), reduction="none")
                hard = hard + (w[known] * ce).sum() / n
    if alpha >= 1:
        return hard
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits.detach().to(student_logits.dtype) / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * hard + (1.0 - alpha) * (t * t) * soft
