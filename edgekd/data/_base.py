"""The one in-memory dataset every stage works on."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import Preprocessing


@dataclass
class Split:
    images: torch.Tensor  # float32, N×C×H×W, already preprocessed (scaled, resized, normalized)
    labels: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, n: int | None, seed: int = 0) -> "Split":
        """A seeded random subset of at most n samples (the split itself when n is None or larger)."""
        if n is None or n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n].sort().values
        return Split(self.images[idx], self.labels[idx])


@dataclass
class Dataset:
    train: Split
    val: Split
    test: Split
    num_classes: int
    channels: int
    image_size: tuple[int, int]  # (H, W) after preprocessing
    class_names: list[str]
    format: str  # "npz" | "folder" | "synthetic"
    preprocessing: Preprocessing  # resolved (channels filled in)
    path: Path | None = None
    sha256: str | None = None  # of the .npz file, or of the sorted folder listing + file bytes
    extra: dict = field(default_factory=dict)

    def split_sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}
