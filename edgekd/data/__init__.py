"""Datasets: one in-memory :class:`Dataset` whatever the source.

``load_dataset`` picks the reader from the path: nothing -> the embedded SYNTHETIC demo data,
a ``.npz`` file -> the MedMNIST layout (:mod:`.npz`), a directory -> image folders
(:mod:`.folder`), a ``.csv``/``.json`` manifest or a folder holding one (and no ``train/``) -> the
files it lists, images or DICOM (:mod:`.manifest`, :mod:`.dicom`). Every reader validates the
data, applies :mod:`.preprocess` and returns the resolved preprocessing so the device can repeat it. The preprocessing itself is
``edgekd.data.preprocess.preprocess`` (a module of the same name, so it is not re-exported).
"""
from __future__ import annotations

from pathlib import Path

from ..config import DataOptions, Preprocessing
from ..errors import DataError
from ._base import Dataset, Split
from .dicom import read_dicom
from .folder import load_folder
from .manifest import find_manifest, load_manifest
from .npz import load_npz
from .synthetic import load_synthetic, make_synthetic_xrays

ACCEPTED = (
    "a .npz file in the MedMNIST layout (train_images, train_labels, val_images, val_labels, "
    "test_images, test_labels), a folder with train/ val/ test/<class>/ images, or a .csv/.json manifest "
    "(file,label[,split][,patient_id]; images or DICOM)"
)
MANIFEST_SUFFIXES = (".csv", ".json")


def load_dataset(
    path: str | Path | None, pre: Preprocessing, *, max_samples: int | None = None, seed: int = 0,
    options: DataOptions | None = None,
) -> Dataset:
    """Load the dataset at ``path`` (None: the synthetic demo set, generated with ``seed``).

    ``options``: how a manifest or DICOM data set is read and split (window, frame, split_by).
    """
    if path is None:
        return load_synthetic(pre, seed=seed, max_samples=max_samples)
    path = Path(path)
    if not path.exists():
        raise DataError(f"data path {path} does not exist: pass {ACCEPTED}")
    if path.is_dir():
        manifest = None if (path / "train").is_dir() else find_manifest(path)
        if manifest is not None:
            return load_manifest(manifest, pre, max_samples=max_samples, seed=seed, options=options)
        _only_for_manifests(options, path)
        return load_folder(path, pre, max_samples=max_samples, seed=seed)
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        return load_manifest(path, pre, max_samples=max_samples, seed=seed, options=options)
    if path.suffix.lower() == ".npz":
        _only_for_manifests(options, path)
        return load_npz(path, pre, max_samples=max_samples, seed=seed)
    raise DataError(f"{path} is not a supported dataset: pass {ACCEPTED}")



def _only_for_manifests(options: DataOptions | None, path: Path) -> None:
    """--window/--frame/--split-by/--split-fractions read a manifest's files: on other data they would do nothing."""
    if options is None:
        return
    default = DataOptions()
    given = [f"--{k.replace('_', '-')}" for k in ("window", "frame", "split_by", "split_fractions")
             if getattr(options, k) != getattr(default, k)]
    if given:
        raise DataError(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to a manifest (.csv/.json of file,label[,split][,patient_id]) and "
                        f"its DICOM files, not to {path.name}: drop {'them' if len(given) > 1 else 'it'}, or list the "
                        "images in a manifest")


__all__ = [
    "Dataset",
    "Split",
    "load_dataset",
    "load_folder",
    "load_manifest",
    "load_npz",
    "load_synthetic",
    "make_synthetic_xrays",
    "read_dicom",
]
