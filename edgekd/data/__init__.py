"""Datasets: one in-memory :class:`Dataset` whatever the source.

``load_dataset`` picks the reader from the path: nothing -> the embedded SYNTHETIC demo data,
a ``.npz`` file -> the MedMNIST layout (:mod:`.npz`), a directory -> image folders
(:mod:`.folder`). Every reader validates the data, applies :mod:`.preprocess` and returns
the resolved preprocessing so the device can repeat it. The preprocessing itself is
``edgekd.data.preprocess.preprocess`` (a module of the same name, so it is not re-exported).
"""
from __future__ import annotations

from pathlib import Path

from ..config import Preprocessing
from ..errors import DataError
from ._base import Dataset, Split
from .folder import load_folder
from .npz import load_npz
from .synthetic import load_synthetic, make_synthetic_xrays

ACCEPTED = (
    "a .npz file in the MedMNIST layout (train_images, train_labels, val_images, val_labels, "
    "test_images, test_labels) or a folder with train/ val/ test/<class>/ images"
)


def load_dataset(
    path: str | Path | None, pre: Preprocessing, *, max_samples: int | None = None, seed: int = 0
) -> Dataset:
    """Load the dataset at ``path`` (None: the synthetic demo set, generated with ``seed``)."""
    if path is None:
        return load_synthetic(pre, seed=seed, max_samples=max_samples)
    path = Path(path)
    if not path.exists():
        raise DataError(f"data path {path} does not exist: pass {ACCEPTED}")
    if path.is_dir():
        return load_folder(path, pre, max_samples=max_samples, seed=seed)
    if path.suffix.lower() == ".npz":
        return load_npz(path, pre, max_samples=max_samples, seed=seed)
    raise DataError(f"{path} is not a supported dataset: pass {ACCEPTED}")


__all__ = [
    "Dataset",
    "Split",
    "load_dataset",
    "load_folder",
    "load_npz",
    "load_synthetic",
    "make_synthetic_xrays",
]
