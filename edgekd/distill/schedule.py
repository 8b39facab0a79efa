"""Training budgets in optimizer steps, and the learning-rate schedule over a budget.

An epoch count cannot serve both 500 and 50 000 images: 20 epochs of 550 images are 180 steps,
far too few for a student to learn a teacher's function, while 20 epochs of 50 000 are hours.
So every training stage is given a number of optimizer steps. The distillation budget is at least
:data:`MIN_STEPS` (a few hundred images are seen many times, each time as a new augmented view),
grows with the data at :data:`EPOCHS_EQUIVALENT` passes over the train set, and is capped at
:data:`MAX_STEPS`. The prune fine-tunes, the recovery after pruning and QAT are fixed shares of
it. Distillation is allowed to be patient (Beyer et al., "Knowledge distillation: A good teacher
is patient and consistent", CVPR 2022): warm-up, then one cosine over the whole budget, and no
early stop before most of it has been trained.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InputError

MIN_STEPS = 1500  # the smallest default distillation budget (a few hundred images)
MAX_STEPS = 10_000  # the largest default (hospital-scale sets: pass --max-steps to go further)
EPOCHS_EQUIVALENT = 12  # between the two: this many passes over the train set
FINETUNE_SHARE = 0.08  # each pruning step's fine-tune, as a share of the distillation budget
RECOVERY_SHARE = 0.30  # the recovery after the last pruning step
QAT_SHARE = 0.10  # quantization-aware fine-tuning


def default_steps(n_train: int, batch_size: int, min_steps: int = MIN_STEPS) -> int:
    """The distillation budget for ``n_train`` training images (labelled + unlabelled)."""
    per_epoch = max(1, math.ceil(n_train / batch_size))
    return int(min(MAX_STEPS, max(min_steps, EPOCHS_EQUIVALENT * per_epoch)))


@dataclass(frozen=True)
class Budget:
    """Optimizer steps for every training stage of one run (recorded in the report)."""

    distill: int
    finetune: int  # after each channel- or depth-pruning step
    recovery: int  # after the last pruning step
    qat: int
    batch_size: int
    n_train: int
    derived: bool  # True: from the data size; False: --max-steps
    min_steps: int = MIN_STEPS  # the smallest derived budget (the task's)

    def to_dict(self) -> dict:
        per_epoch = max(1, math.ceil(self.n_train / self.batch_size))
        return {"distill_steps": self.distill, "prune_finetune_steps": self.finetune,
                "prune_recovery_steps": self.recovery, "qat_steps": self.qat, "batch_size": self.batch_size,
                "train_images": self.n_train, "distill_epochs_equivalent": round(self.distill / per_epoch, 1),
                "source": "derived from the train-set size" if self.derived else "--max-steps",
                "rule": f"max({self.min_steps}, {EPOCHS_EQUIVALENT} epochs) capped at {MAX_STEPS}; fine-tune "
                        f"{FINETUNE_SHARE:.0%}, recovery {RECOVERY_SHARE:.0%}, QAT {QAT_SHARE:.0%} of it"}


def plan(n_train: int, batch_size: int, max_steps: int | None, *, finetune: int | None = None,
         recovery: int | None = None, qat: int | None = None, min_steps: int = MIN_STEPS) -> Budget:
    """Every stage's steps: explicit values win, the rest are shares of the distillation budget."""
    check_steps(max_steps, "--max-steps", allow_zero=False)
    for v, name in ((finetune, "prune fine-tune steps"), (recovery, "prune recovery steps"), (qat, "QAT steps")):
        check_steps(v, name, allow_zero=True)
    total = default_steps(n_train, batch_size, min_steps) if max_steps is None else int(max_steps)

    def share(explicit: int | None, s: float) -> int:
        return int(explicit) if explicit is not None else max(1, round(s * total))

    return Budget(total, share(finetune, FINETUNE_SHARE), share(recovery, RECOVERY_SHARE), share(qat, QAT_SHARE),
                  batch_size, n_train, max_steps is None, min_steps)


def check_steps(v: int | None, name: str, *, allow_zero: bool) -> None:
    if v is None:
        return
    lo = 0 if allow_zero else 1
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise InputError(f"{name} must be an integer >= {lo}, got {v!r}")


def lr_factor(step: int, total: int, warmup_fraction: float) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based): linear warm-up, then cosine to 0."""
    warm = int(round(warmup_fraction * total))
    if step < warm:
        return (step + 1) / warm
    span = max(1, total - warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / span)))
