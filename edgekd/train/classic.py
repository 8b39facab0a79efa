"""The classic teacher recipe, in epochs, over the one loop (:func:`edgekd.train.loop.fit_classifier`).

Kept for the embedded demo's teacher and the suites' train-if-missing teachers, whose cached
weights and measured figures come from it: one phase over every layer (no frozen head phase:
these teachers start from scratch), cross-entropy, AdamW with a cosine over the whole run and no
warm-up, random shifts (a crop of a replicate-padded image) as the only augmentation, one val
evaluation per epoch, no early stop, and the weights of the epoch with the best val AUC are the
ones returned. The same seed gives the same weights on the same machine.

What changed when it moved onto the shared loop (``DEMO_VERSION`` 4): weight decay no longer
applies to biases and norms, the cosine is computed in closed form, a trailing batch of one
sample joins the previous batch instead of being dropped, and each step's shifts come from that
step's seed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data._base import Split
from ..distill.augment import Mixed
from ..distill.trainer import _batch_slices
from ..errors import InputError
from .loop import Phase, fit_classifier


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by its own random (dy, dx) in [-max_shift, max_shift] (edges replicated)."""
    if max_shift <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (max_shift, max_shift, max_shift, max_shift), mode="replicate")
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # B×1×H×1
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # B×1×1×W
    bi = torch.arange(b)[:, None, None, None]
    ci = torch.arange(c)[None, :, None, None]
    return padded[bi, ci, rows, cols]


def shift_for(size: int) -> int:
    """±4 px, less for tiny images (28×28 MedMNIST gets ±3)."""
    return max(1, min(4, size // 8))


class ShiftViews:
    """The classic recipe's views: each image shifted by up to ``max_shift`` px, seeded per step."""

    def __init__(self, max_shift: int) -> None:
        self.max_shift = int(max_shift)

    def __call__(self, images: torch.Tensor, seed: int) -> Mixed:
        n = images.shape[0]
        x = random_shift(images, self.max_shift, torch.Generator().manual_seed(seed))
        return Mixed(x, torch.arange(n), torch.ones(n, dtype=torch.float32))

    def describe(self) -> dict:
        return {"policy": "random shift", "ops": [f"shift ±{self.max_shift} px, edges replicated (p=1)"]}


def train_classifier(
    model: torch.nn.Module,
    train: Split,
    val: Split,
    *,
    epochs: int,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    desc: str = "train teacher",
) -> dict:
    """Train ``model`` in place with cross-entropy; keep the weights of the best val-AUC epoch.

    Returns ``{"best_val_auc", "best_epoch", "epochs", "steps", "history"}``; ``history`` has one
    dict per epoch (epoch, step, train_loss, val_loss, val_auc, val_acc, lr). When val AUC is
    undefined (one class in val) epochs are ranked by val accuracy instead. The model is left in
    eval mode.
    """
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise InputError(f"epochs must be an integer >= 1, got {epochs!r}")
    if len(train) < 2:
        raise InputError(f"training needs >= 2 train samples, got {len(train)}")
    per_epoch = len(_batch_slices(len(train), min(batch_size, len(train))))
    torch.manual_seed(seed)
    res = fit_classifier(model, train, val, [Phase("full", epochs * per_epoch, lr)],
                         views=ShiftViews(shift_for(int(min(train.images.shape[-2:])))), batch_size=batch_size,
                         weight_decay=1e-4, warmup_fraction=0.0, every=per_epoch, patience=None, seed=seed, desc=desc)
    history = [{"epoch": h["step"] // per_epoch, **h} for h in res.history[1:]]
    best_epoch = res.best_step // per_epoch
    return {"best_val_auc": res.best_val_auc, "best_epoch": best_epoch, "epochs": epochs, "steps": res.steps_run,
            "history": history}
