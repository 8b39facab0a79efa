"""Augmentation views whose teacher logits can be computed once.

Distillation pairs each training image with the teacher's soft target for *that* image, and the
teacher's logits are computed once (the teacher may be a slow or black-box model). Random
augmentation would break that pairing, so edgekd uses a small fixed set of label-preserving
views instead: the teacher sees every view once, and each training batch draws one view.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import InputError, did_you_mean


def _shift(dx: int, dy: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Translate by (dx, dy) × 1/16 of the image size, replicating the border (no black bands)."""

    def view(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        px, py = max(1, w // 16) * dx, max(1, h // 16) * dy
        pad = (max(px, 0), max(-px, 0), max(py, 0), max(-py, 0))
        padded = F.pad(x, pad, mode="replicate")
        top, left = max(-py, 0), max(-px, 0)
        return padded[..., top : top + h, left : left + w]

    return view


VIEWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x,
    "hflip": lambda x: torch.flip(x, dims=[-1]),
    "shift_left": _shift(-1, 0),
    "shift_right": _shift(1, 0),
    "shift_up": _shift(0, -1),
    "shift_down": _shift(0, 1),
}


def check_views(views: tuple[str, ...]) -> tuple[str, ...]:
    if not views or views[0] != "identity":
        raise InputError("distillation views must start with 'identity' (the un-augmented images)")
    for v in views:
        if v not in VIEWS:
            raise InputError(f"unknown distillation view '{v}'{did_you_mean(v, VIEWS)}; known: {', '.join(VIEWS)}")
    return tuple(views)


def apply_view(images: torch.Tensor, view: str) -> torch.Tensor:
    return VIEWS[view](images)
