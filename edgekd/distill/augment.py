"""Consistent augmentation for distillation (function matching, Beyer et al., CVPR 2022).

The student learns the teacher's *function*, not its labels: every training batch is a fresh,
random, medically plausible view of the images, and the teacher is asked about exactly that view
(never about the clean image while the student sees an augmented one). Mixup between images of
the batch widens the set of inputs on which the two functions are matched.

The transforms are kornia's batched augmentations (per-sample parameters, seeded), applied in
pixel space ``[0, 1]`` and mapped back to the model's normalisation, so a brightness or gamma
change means what it says whatever ``--mean``/``--std`` are. Flips are off unless the user allows
them: anatomy has a left and a right (situs, the heart's side, a marker's position).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError, did_you_mean

AUGMENTS = ("medical", "none")  # DistillConfig.augment values

# The "medical" policy: small geometric and acquisition changes that keep the diagnosis.
ROTATION_DEG = 5.0  # a patient is never perfectly aligned
TRANSLATE = 0.06  # of the image side
SCALE = (0.92, 1.08)  # zoom in / out (field of view)
BRIGHTNESS = (0.9, 1.1)  # multiplicative exposure change
CONTRAST = (0.85, 1.15)
GAMMA = (0.85, 1.15)  # detector response / display curve
NOISE_STD = 0.02  # additive Gaussian noise, in [0, 1] pixel units
MIXUP_BETA = 1.0  # mixing weights lam ~ Beta(1, 1) (uniform), per image pair


def check_augment(name: str, mixup: float) -> None:
    if name not in AUGMENTS:
        raise InputError(f"unknown augmentation '{name}'{did_you_mean(str(name), AUGMENTS)}: use one of {', '.join(AUGMENTS)}")
    if not isinstance(mixup, (int, float)) or isinstance(mixup, bool) or not 0.0 <= mixup <= 1.0:
        raise InputError(f"--mixup is the probability that a batch is mixed and must be in [0, 1], got {mixup!r}")


@dataclass
class Mixed:
    """One augmented batch: the images both models see, and how the labels were mixed."""

    images: torch.Tensor  # N×C×H×W, normalised like the data
    partner: torch.Tensor  # N int64: index (within the batch) of the image mixed in; itself when not mixed
    lam: torch.Tensor  # N float32: weight of the image's own content (1 when not mixed)


class Augmenter:
    """Seeded random views of preprocessed batches; ``describe()`` says exactly what they are."""

    def __init__(self, name: str, *, mean: tuple[float, ...], std: tuple[float, ...], channels: int,
                 flips: bool = False, mixup: float = 0.0) -> None:
        check_augment(name, mixup)
        self.name, self.flips, self.mixup = name, bool(flips), float(mixup)
        c = channels  # mean / std: 1×C×1×1, to move between the model's normalisation and [0, 1] pixels
        self.mean = torch.tensor((list(mean) * c)[:c] if len(mean) == 1 else list(mean), dtype=torch.float32).view(1, c, 1, 1)
        self.std = torch.tensor((list(std) * c)[:c] if len(std) == 1 else list(std), dtype=torch.float32).view(1, c, 1, 1)
        self._pipe = self._build() if name == "medical" else None

    def _build(self) -> torch.nn.Module:
        return torch.nn.Sequential(*medical_ops(self.flips))

    @property
    def active(self) -> bool:
        return self._pipe is not None or self.mixup > 0

    def describe(self) -> dict:
        """What the report says: enough to reproduce the views."""
        if self._pipe is None:
            ops: list[str] = []
        else:
            ops = (["horizontal flip p=0.5"] if self.flips else []) + [
                f"affine: rotation ±{ROTATION_DEG}°, translation ±{TRANSLATE:.0%}, scale {SCALE[0]}–{SCALE[1]}, "
                "border replicated (p=1)",
                f"brightness ×{BRIGHTNESS[0]}–{BRIGHTNESS[1]} (p=0.8)", f"contrast ×{CONTRAST[0]}–{CONTRAST[1]} (p=0.8)",
                f"gamma {GAMMA[0]}–{GAMMA[1]} (p=0.5)", f"Gaussian noise σ={NOISE_STD} in [0,1] pixel units (p=0.5)",
            ]
        if self.mixup > 0:
            ops.append(f"mixup of image pairs, weight ~ Beta({MIXUP_BETA}, {MIXUP_BETA}), on {self.mixup:.0%} of batches")
        return {"policy": self.name, "flips": self.flips, "mixup": self.mixup, "library": "kornia" if self._pipe else None,
                "ops": ops, "pixel_space": "[0, 1] before normalisation; clamped to [0, 1] after"}

    def __call__(self, images: torch.Tensor, seed: int) -> Mixed:
        """A random view of ``images`` (N×C×H×W, normalised), determined by ``seed`` alone."""
        n = images.shape[0]
        ident = torch.arange(n)
        ones = torch.ones(n, dtype=torch.float32)
        if not self.active:
            return Mixed(images, ident, ones)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            x = images
            if self._pipe is not None:
                mean, std = self.mean.to(x.device), self.std.to(x.device)
                pix = (x.float() * std + mean).clamp(0.0, 1.0)
                pix = self._pipe(pix).clamp(0.0, 1.0)
                x = ((pix - mean) / std).to(images.dtype)
            partner, lam = ident, ones
            if self.mixup > 0 and n > 1 and float(torch.rand(())) < self.mixup:
                partner = torch.randperm(n)
                lam = torch.distributions.Beta(MIXUP_BETA, MIXUP_BETA).sample((n,)).float()
                w = lam.view(n, 1, 1, 1).to(x.device, x.dtype)
                x = w * x + (1 - w) * x[partner.to(x.device)]
        return Mixed(x.contiguous(), partner, lam)


    def view(self, images: torch.Tensor, labels: torch.Tensor, seed: int):
        """(images, labels, partner labels, weight of the own label) of one seeded view of a batch."""
        mixed = self(images, seed)
        return mixed.images, labels, labels[mixed.partner], mixed.lam, mixed.partner


def medical_ops(flips: bool) -> list[torch.nn.Module]:
    """The "medical" policy's kornia ops, in order (classification views and segmentation pairs alike)."""
    import kornia.augmentation as K

    ops: list[torch.nn.Module] = [K.RandomHorizontalFlip(p=0.5)] if flips else []
    return ops + [
        K.RandomAffine(degrees=ROTATION_DEG, translate=(TRANSLATE, TRANSLATE), scale=SCALE,
                       padding_mode="border", p=1.0),
        K.RandomBrightness(BRIGHTNESS, p=0.8),
        K.RandomContrast(CONTRAST, p=0.8),
        K.RandomGamma(GAMMA, p=0.5),
        K.RandomGaussianNoise(std=NOISE_STD, p=0.5),
    ]
