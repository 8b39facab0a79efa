"""The in-memory segmentation dataset, and the mask rules every segmentation reader shares.

A mask is an H×W array of class indices 0..K−1, one per image, the same size as its image.
The readers (:mod:`.seg_folder`, :mod:`.seg_npz`, :mod:`.synthetic_us`) all go through
:func:`classes_of` and :func:`finish_masks`, so the rules below hold whatever the source:

* **binary 0/255**: when every mask of the dataset holds only 0 and 255 (and K is not given, or
  is 2), 255 becomes 1 (foreground) — the usual way a binary mask is saved as a PNG;
* otherwise values are class indices: K = ``num_classes`` when given (every value must be
  below it), else the largest value + 1, and at least 2 (a set whose masks are all background
  is still a two-class, background/foreground task);
* 255 next to other foreground values (0/1/255, or soft anti-aliased edges) is refused: it is
  neither a binary mask nor a plausible class index. An "ignore" label is not supported.

Masks are resized with nearest-neighbour sampling at pixel centres (:func:`resize_masks`), so
a resized mask holds only values of the original; images are resized by
:func:`edgekd.data.preprocess.preprocess` (bilinear), to the same size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..config import Preprocessing
from ..errors import DataError
from ._base import first_index
from .preprocess import subset_indices

MAX_SEG_CLASSES = 256  # mask values above this are a mistake (a grey-level image saved as the mask)
MASK_RESIZE = "nearest (pixel centres)"
_STATS_PIXELS = 1 << 24  # mask pixels scanned together by mask_stats
_VALUE_FIX = "binary masks hold 0/255 or 0/1, multi-class masks class indices 0..K-1"


@dataclass
class SegSplit:
    images: torch.Tensor  # float32, N×C×H×W, already preprocessed (scaled, resized, normalized)
    masks: torch.Tensor  # int64, N×H×W class indices 0..K-1, resized with nearest-neighbour

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def subset(self, n: int | None, seed: int = 0) -> "SegSplit":
        """A seeded random subset of at most n samples: the same rows :meth:`Split.subset` keeps."""
        if n is None or n >= len(self):
            return self
        idx = torch.from_numpy(subset_indices(len(self), n, seed))
        return SegSplit(self.images[idx], self.masks[idx])


@dataclass
class SegDataset:
    train: SegSplit
    val: SegSplit
    test: SegSplit
    num_classes: int  # K: mask values are 0..K-1 (0 is background)
    channels: int
    image_size: tuple[int, int]  # (H, W) after preprocessing, of images and masks alike
    class_names: list[str]
    format: str  # "npz" | "folder" | "synthetic"
    preprocessing: Preprocessing  # resolved (channels filled in); masks: MASK_RESIZE
    path: Path | None = None
    sha256: str | None = None  # of the .npz file, or of the sorted folder listing + file bytes
    extra: dict = field(default_factory=dict)
    task: str = "segmentation"

    def split_sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


@dataclass
class MaskStats:
    """One row per mask of the dataset (every split), and how an error message names each."""

    low: np.ndarray  # smallest value of each mask
    high: np.ndarray  # largest value
    has_255: np.ndarray  # bool: holds 255
    has_other: np.ndarray  # bool: holds a value other than 0 and 255
    name: Callable[[int], str]  # row -> "train/masks/a.png in root" or "d.npz: 'val_masks' mask 3"


def mask_stats(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(low, high, has_255, has_other) of each mask of an N×H×W integer array, in chunks."""
    n = len(masks)
    out = (np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool), np.zeros(n, bool))
    step = max(1, _STATS_PIXELS // max(1, masks[0].size if n else 1))
    for s in range(0, n, step):
        flat = masks[s : s + step].reshape(min(step, n - s), -1)
        out[0][s : s + step], out[1][s : s + step] = flat.min(axis=1), flat.max(axis=1)
        out[2][s : s + step] = (flat == 255).any(axis=1)
        out[3][s : s + step] = ((flat != 0) & (flat != 255)).any(axis=1)
    return out


def check_num_classes(num_classes: int | None) -> None:
    if num_classes is None:
        return
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or not 2 <= num_classes <= MAX_SEG_CLASSES:
        raise DataError(f"num_classes must be an integer in [2, {MAX_SEG_CLASSES}] or None (inferred from the masks), "
                        f"got {num_classes!r}: e.g. 2 for a lesion/background mask")


def classes_of(stats: MaskStats, num_classes: int | None, given_by: str = "num_classes") -> tuple[int, bool]:
    """(K, binary_255): the class count and whether 255 stands for class 1 (see the module rules).

    ``given_by`` names where a given K comes from in messages ("num_classes", "'class_names'").
    """
    check_num_classes(num_classes)
    if len(stats.low) == 0:
        return num_classes or 2, False
    i = first_index(stats.low < 0)
    if i is not None:
        raise DataError(f"{stats.name(i)} has the negative value {stats.low[i]}: {_VALUE_FIX}")
    binary_255 = bool(stats.has_255.any()) and not stats.has_other.any() and num_classes in (None, 2)
    if binary_255:
        return 2, True
    if num_classes is not None:
        i = first_index(stats.high >= num_classes)
        if i is not None:
            raise DataError(f"{stats.name(i)} has the value {stats.high[i]}, outside 0..{num_classes - 1} "
                            f"({given_by} {num_classes}): {_VALUE_FIX}, or give the right {given_by}")
        return int(num_classes), False
    if stats.has_255.any():  # 255 next to other foreground values
        a = first_index(stats.has_255 & stats.has_other)
        if a is not None:
            raise DataError(f"{stats.name(a)} holds 255 and other foreground values (soft edges, or 0/1/255?): "
                            f"{_VALUE_FIX}")
        a, b = first_index(stats.has_255), first_index(stats.has_other)
        raise DataError(f"masks mix 0/255 ({stats.name(a)}) with other foreground values (e.g. {stats.high[b]} in "
                        f"{stats.name(b)}): {_VALUE_FIX}, one convention for the whole dataset")
    i = first_index(stats.high >= MAX_SEG_CLASSES)
    if i is not None:
        raise DataError(f"{stats.name(i)} has the value {stats.high[i]}, over the {MAX_SEG_CLASSES}-class limit: "
                        f"{_VALUE_FIX} (is it a grey-level image rather than a mask?)")
    return max(2, int(stats.high.max()) + 1), False


def resize_masks(masks: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an N×H×W label array at pixel centres (only original values survive).

    Output pixel (i, j) takes input pixel (⌊(i + ½)·H/H'⌋, ⌊(j + ½)·W/W'⌋), the rule of
    ``torch.nn.functional.interpolate(mode="nearest-exact")``, so a device can repeat it.
    """
    h, w = masks.shape[1:3]
    if (h, w) == tuple(out_hw):
        return masks
    rows = np.minimum(((np.arange(out_hw[0]) + 0.5) * h / out_hw[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(out_hw[1]) + 0.5) * w / out_hw[1]).astype(np.int64), w - 1)
    return masks[:, rows[:, None], cols[None, :]]


def finish_masks(masks: np.ndarray, binary_255: bool, out_hw: tuple[int, int]) -> torch.Tensor:
    """int64 N×H'×W' class indices from raw N×H×W masks: 255 -> 1 when binary, then resized."""
    masks = resize_masks(np.asarray(masks), out_hw)
    labels = torch.from_numpy(np.ascontiguousarray(masks).astype(np.int64))
    return labels // 255 if binary_255 else labels


def default_class_names(num_classes: int) -> list[str]:
    return ["background", "foreground"] if num_classes == 2 else [f"class_{i}" for i in range(num_classes)]


def seg_extra(splits: dict[str, SegSplit], num_classes: int, binary_255: bool) -> dict:
    """What the report records about the masks: the value rule, resizing, per-class pixel shares."""
    def shares(masks: torch.Tensor) -> list[float]:
        counts = torch.bincount(masks.reshape(-1), minlength=num_classes).double()
        return [round(float(c), 6) for c in counts / max(1.0, float(counts.sum()))]

    return {
        "mask_values": "0/255 -> 0/1" if binary_255 else "class indices",
        "mask_resize": MASK_RESIZE,
        "pixel_shares": {s: shares(split.masks) for s, split in splits.items()},
        "empty_masks": {s: int((split.masks.flatten(1) == 0).all(dim=1).sum()) for s, split in splits.items()},
    }
