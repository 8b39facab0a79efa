"""Consistent augmentation for segmentation distillation: the mask moves with the image.

The "medical" policy of :mod:`edgekd.distill.augment` (same ranges, same pixel-space handling),
applied by kornia's ``AugmentationSequential`` to an image batch and its masks together: each
geometric op (affine, optional flip) draws one set of per-sample parameters and warps the image
bilinearly and the mask with nearest-neighbour sampling, so class indices (and -1, unlabelled)
stay class indices; photometric ops (brightness, contrast, gamma, noise) touch the image only.
Borders are replicated in both, so a lesion touching the edge stays consistent. No mixup: a
blend of two hard masks is not a mask. The classification :class:`~edgekd.distill.augment.Augmenter`
is unchanged.
"""
from __future__ import annotations

import torch

from ..errors import InputError
from .augment import (
    BRIGHTNESS,
    CONTRAST,
    GAMMA,
    NOISE_STD,
    ROTATION_DEG,
    SCALE,
    TRANSLATE,
    check_augment,
    medical_ops,
)


def _per_channel(values: tuple[float, ...], c: int) -> torch.Tensor:
    return torch.tensor((list(values) * c)[:c] if len(values) == 1 else list(values), dtype=torch.float32).view(1, c, 1, 1)


class SegAugmenter:
    """Seeded random views of (image, mask) batches; ``describe()`` says exactly what they are."""

    def __init__(self, name: str, *, mean: tuple[float, ...], std: tuple[float, ...], channels: int,
                 flips: bool = False) -> None:
        check_augment(name, 0.0)
        self.name, self.flips = name, bool(flips)
        self.mean, self.std = _per_channel(tuple(mean), channels), _per_channel(tuple(std), channels)
        self._pipe = self._build() if name == "medical" else None

    def _build(self) -> torch.nn.Module:
        import kornia.augmentation as K

        return K.AugmentationSequential(*medical_ops(self.flips), data_keys=["input", "mask"])

    @property
    def active(self) -> bool:
        return self._pipe is not None

    def describe(self) -> dict:
        """What the report says: enough to reproduce the views."""
        ops: list[str] = []
        if self._pipe is not None:
            ops = (["horizontal flip p=0.5 (image and mask)"] if self.flips else []) + [
                f"affine: rotation ±{ROTATION_DEG}°, translation ±{TRANSLATE:.0%}, scale {SCALE[0]}–{SCALE[1]}, "
                "border replicated (p=1); image bilinear, mask nearest, same parameters",
                f"brightness ×{BRIGHTNESS[0]}–{BRIGHTNESS[1]} (p=0.8, image only)",
                f"contrast ×{CONTRAST[0]}–{CONTRAST[1]} (p=0.8, image only)",
                f"gamma {GAMMA[0]}–{GAMMA[1]} (p=0.5, image only)",
                f"Gaussian noise σ={NOISE_STD} in [0,1] pixel units (p=0.5, image only)",
            ]
        return {"policy": self.name, "flips": self.flips, "mixup": 0.0, "library": "kornia" if self._pipe else None,
                "ops": ops, "pixel_space": "[0, 1] before normalisation; clamped to [0, 1] after",
                "masks": "moved with the image (nearest); -1 (unlabelled) stays -1"}

    def __call__(self, images: torch.Tensor, masks: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A random view of ``images`` (N×C×H×W, normalised) and ``masks`` (N×H×W int64), fixed by ``seed``."""
        if images.ndim != 4 or masks.shape != (images.shape[0], *images.shape[2:]):
            raise InputError(f"images must be N×C×H×W and masks N×H×W of the same N, H, W; got "
                             f"{tuple(images.shape)} and {tuple(masks.shape)}")
        if masks.dtype.is_floating_point or masks.dtype == torch.bool:
            raise InputError(f"masks must hold integer class indices (int64), got {masks.dtype}: pass mask.long()")
        if self._pipe is None:
            return images, masks
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mean, std = self.mean.to(images.device), self.std.to(images.device)
            pix = (images.float() * std + mean).clamp(0.0, 1.0)
            pix, warped = self._pipe(pix, masks[:, None].float())
            x = ((pix.clamp(0.0, 1.0) - mean) / std).to(images.dtype)
        return x.contiguous(), warped[:, 0].round().to(masks.dtype).contiguous()

    def view(self, images: torch.Tensor, masks: torch.Tensor, seed: int):
        """(images, masks, masks, ones, identity): the classification view's shape, for the training loop."""
        x, m = self(images, masks, seed)
        n = images.shape[0]
        return x, m, m, torch.ones(n, dtype=torch.float32), torch.arange(n)
