"""The one dataset every stage works on: in memory, except a large train split, read from disk (:mod:`.lazy`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import Preprocessing
from ..errors import DataError


@dataclass
class Split:
    # float32, N×C×H×W, already preprocessed (scaled, resized, normalized); a large train split's is a
    # edgekd.data.lazy.LazyRows that preprocesses the rows each index asks for (the same values)
    images: torch.Tensor
    labels: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, n: int | None, seed: int = 0) -> "Split":
        """A seeded random subset of at most n samples (the split itself when n is None or larger).

        The subset's images are a tensor, also when the split's are read from disk."""
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


def first_index(mask: np.ndarray) -> int | None:
    """Index of the first True in a 1-D mask (the sample an error message names), or None."""
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def shown(text: str, limit: int = 120) -> str:
    """User-controlled text (a file name, a key) made safe for a one-line message: escaped, shortened."""
    text = str(text)
    if not text.isprintable():
        text = repr(text)[1:-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _missing_classes(labels: np.ndarray, num_classes: int) -> list[int]:
    present = np.zeros(num_classes, dtype=bool)
    present[labels[(labels >= 0) & (labels < num_classes)]] = True
    return np.flatnonzero(~present).tolist()


def check_every_class(name: str, source: dict[str, np.ndarray], used: dict[str, np.ndarray],
                      class_names: list[str], max_samples: int | None) -> None:
    """Every class must have samples in train (else it cannot be learned) and in val and test (else ROC AUC,
    sensitivity and specificity are undefined). ``source``: each split's labels; ``used``: after --max-samples."""
    k = len(class_names)
    for split in ("train", "val", "test"):
        missing = _missing_classes(used[split], k)
        if not missing:
            continue
        c = missing[0]
        what = f"class {c} ('{shown(class_names[c], 40)}')" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        if c not in _missing_classes(source[split], k):
            raise DataError(f"{name}: {what} has no {split} samples among the {len(used[split])} kept by "
                            f"--max-samples {max_samples}: raise --max-samples (every class needs samples in each split)")
        why = "it cannot be learned" if split == "train" else "AUC, sensitivity and specificity are undefined"
        raise DataError(f"{name}: {what} has no {split} samples, so {why}: every class needs train, val and test "
                        "samples (labels must be 0..K-1 with no gaps)")
