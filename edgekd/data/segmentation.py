"""Segmentation datasets: one in-memory :class:`SegDataset` whatever the source.

``load_segmentation`` picks the reader from the path, as :func:`edgekd.data.load_dataset` does for
classification: nothing -> the SYNTHETIC ultrasound set (:mod:`.synthetic_us`), a ``.npz`` file ->
``{split}_images`` / ``{split}_masks`` arrays (:mod:`.seg_npz`), a directory ->
``{split}/images/`` + ``{split}/masks/`` (:mod:`.seg_folder`). Images are preprocessed exactly as
for classification; masks become int64 N×H×W class indices, resized with nearest-neighbour
(rules for mask values: :mod:`._seg_base`).
"""
from __future__ import annotations

from pathlib import Path

from ..config import Preprocessing
from ..errors import DataError
from ._seg_base import MASK_RESIZE, SegDataset, SegSplit, resize_masks
from .seg_folder import load_seg_folder
from .seg_npz import load_seg_npz
from .synthetic_us import (
    load_synthetic_ultrasound,
    make_synthetic_ultrasound,
    synthetic_ultrasound_splits,
)

ACCEPTED = ("a .npz file with train_images, train_masks, val_images, val_masks, test_images, test_masks, "
            "or a folder with train/ val/ test/, each holding images/ and masks/ (same file names)")


def load_segmentation(path: str | Path | None, pre: Preprocessing, *, num_classes: int | None = None,
                      max_samples: int | None = None, seed: int = 0) -> SegDataset:
    """Load the segmentation dataset at ``path`` (None: the synthetic ultrasound set, generated with ``seed``).

    ``num_classes`` fixes K (every mask value must be below it); None infers it from the masks.
    """
    if path is None:
        if num_classes not in (None, 2):
            raise DataError(f"the synthetic ultrasound set has 2 classes (background, lesion), not {num_classes}: "
                            "leave num_classes unset or pass --data")
        return load_synthetic_ultrasound(pre, seed=seed, max_samples=max_samples)
    path = Path(path)
    if not path.exists():
        raise DataError(f"data path {path} does not exist: pass {ACCEPTED}")
    if path.is_dir():
        return load_seg_folder(path, pre, num_classes=num_classes, max_samples=max_samples, seed=seed)
    if path.suffix.lower() == ".npz":
        return load_seg_npz(path, pre, num_classes=num_classes, max_samples=max_samples, seed=seed)
    raise DataError(f"{path} is not a supported segmentation dataset: pass {ACCEPTED}")


__all__ = [
    "MASK_RESIZE",
    "SegDataset",
    "SegSplit",
    "load_seg_folder",
    "load_seg_npz",
    "load_segmentation",
    "load_synthetic_ultrasound",
    "make_synthetic_ultrasound",
    "resize_masks",
    "synthetic_ultrasound_splits",
]
