"""A tiny learnable task shared by the training-stage tests: noise images with a 6×6 square,
bright for class 1, dark for class 0."""
from __future__ import annotations

import torch

from edgekd.config import Preprocessing
from edgekd.data._base import Dataset, Split
from edgekd.distill import TeacherSignal


def square_split(n: int, g: torch.Generator, size: int = 32) -> Split:
    x = 0.3 * torch.randn(n, 1, size, size, generator=g)
    y = (torch.arange(n) % 2)[torch.randperm(n, generator=g)]
    pos = torch.randint(0, size - 6, (n, 2), generator=g)
    for i in range(n):
        r, c = pos[i].tolist()
        x[i, :, r : r + 6, c : c + 6] += 1.2 if y[i] == 1 else -1.2
    return Split(x, y.long())


def square_dataset(n_train: int = 192, n_val: int = 96, n_test: int = 32, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    return Dataset(square_split(n_train, g), square_split(n_val, g), square_split(n_test, g), num_classes=2,
                   channels=1, image_size=(32, 32), class_names=["dark", "bright"], format="synthetic",
                   preprocessing=Preprocessing(channels=1))


def oracle_logits(data: Dataset, margin: float) -> TeacherSignal:
    """Teacher logits that know the labels: ±margin (no augmentation)."""
    def logits(s: Split) -> torch.Tensor:
        return torch.nn.functional.one_hot(s.labels, 2).float() * 2 * margin - margin
    return TeacherSignal.plain(data.train.images, data.train.labels, logits(data.train), logits(data.val))
