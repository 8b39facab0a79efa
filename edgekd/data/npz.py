"""Datasets stored as one ``.npz`` file in the MedMNIST layout.

Arrays ``train_images``, ``train_labels``, ``val_images``, ``val_labels``, ``test_images``,
``test_labels``; images N×H×W (grayscale) or N×H×W×3 (RGB), uint8; labels N or N×1 integers
(0 … K−1). An optional 1-D string array ``class_names`` names the classes. The file is opened
with ``allow_pickle=False``: an ``.npz`` never runs code here.
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from .._io import sha256_file
from ..config import Preprocessing
from ..errors import DataError
from ._base import Dataset, Split
from .preprocess import check_max_samples, image_layout, output_size, preprocess, resolve, subset_indices

SPLITS = ("train", "val", "test")
REQUIRED_KEYS = tuple(f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels"))
LAYOUT = (
    "train_images/train_labels, val_images/val_labels, test_images/test_labels "
    "(images N×H×W[×3] uint8, labels N or N×1 ints)"
)
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the archive, or a DataError for a missing, corrupt or incomplete file."""
    if not path.exists():
        raise DataError(f"npz file {path} not found: check the path (or pass a folder with train/ val/ test/)")
    if not path.is_file():
        raise DataError(f"{path} is not a file: pass a .npz file in the MedMNIST layout")
    try:
        archive = np.load(path, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise DataError(
            f"{path} is not a readable .npz archive (corrupt or truncated? {exc}): "
            "re-download it or re-save it with numpy.savez"
        ) from exc
    if not hasattr(archive, "files"):
        raise DataError(
            f"{path} holds a single array, not an .npz archive: save the splits with numpy.savez(path, "
            "train_images=..., train_labels=..., val_images=..., val_labels=..., test_images=..., test_labels=...)"
        )
    with archive:
        missing = [k for k in REQUIRED_KEYS if k not in archive.files]
        if missing:
            raise DataError(
                f"{path.name} is missing {', '.join(missing)} (it has: {', '.join(archive.files) or 'nothing'}); "
                f"expected the MedMNIST layout: {LAYOUT}"
            )
        wanted = list(REQUIRED_KEYS) + (["class_names"] if "class_names" in archive.files else [])
        arrays: dict[str, np.ndarray] = {}
        for key in wanted:
            try:
                arrays[key] = archive[key]
            except _READ_ERRORS as exc:
                raise DataError(
                    f"{path.name}: array '{key}' cannot be read ({exc}): "
                    "re-save it as a plain numeric array with numpy.savez"
                ) from exc
    return arrays


def _check_images(name: str, key: str, images: np.ndarray) -> tuple[int, int, int]:
    """Rank, emptiness, dtype, finiteness and 0-255 range of one split's images."""
    try:
        layout = image_layout(images)
    except DataError:
        raise DataError(
            f"{name}: '{key}' has shape {tuple(images.shape)}: expected N×H×W (grayscale) or N×H×W×3 (RGB) images"
        ) from None
    if images.shape[0] == 0:
        raise DataError(f"{name}: '{key}' has 0 samples: every split (train, val, test) needs at least one image")
    if images.dtype == np.uint8:
        return layout
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise DataError(f"{name}: '{key}' has dtype {images.dtype}: store images as uint8 (0-255)")
    if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
        raise DataError(f"{name}: '{key}' contains NaN/Inf pixels: clean the images (uint8 0-255)")
    lo, hi = images.min(), images.max()
    if lo < 0 or hi > 255:
        raise DataError(
            f"{name}: '{key}' pixels range over [{lo}, {hi}]: edgekd expects 0-255; rescale and save as uint8"
        )
    if np.issubdtype(images.dtype, np.floating) and 0 < hi <= 1.0:
        raise DataError(
            f"{name}: '{key}' is float with max {hi:.3g}: it looks scaled to [0, 1] already; "
            "edgekd expects 0-255 pixels (save (x*255).astype(uint8))"
        )
    return layout


def _check_labels(name: str, key: str, labels: np.ndarray, n_images: int) -> np.ndarray:
    """Labels as int64 N: shape N or N×1, integral, non-negative, one per image."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(
            f"{name}: '{key}' has shape {tuple(labels.shape)}: "
            "expected N or N×1 class indices (multi-label data is not supported)"
        )
    if len(labels) != n_images:
        raise DataError(
            f"{name}: '{key}' has {len(labels)} labels but there are {n_images} images: they must match one to one"
        )
    if np.issubdtype(labels.dtype, np.floating):
        if not np.isfinite(labels).all():
            raise DataError(f"{name}: '{key}' contains NaN/Inf: labels must be integer class indices")
        if not np.all(labels == np.round(labels)):
            raise DataError(f"{name}: '{key}' has non-integer values: labels must be class indices 0..K-1")
    elif not np.issubdtype(labels.dtype, np.integer) and labels.dtype != np.bool_:
        raise DataError(f"{name}: '{key}' has dtype {labels.dtype}: labels must be integer class indices 0..K-1")
    if labels.size and labels.min() < 0:
        raise DataError(f"{name}: '{key}' has negative labels (min {labels.min()}): use class indices 0..K-1")
    return labels.astype(np.int64)


def _class_names(name: str, raw: np.ndarray | None, num_classes: int) -> list[str]:
    if raw is None:
        return [f"class_{i}" for i in range(num_classes)]
    if raw.ndim != 1 or raw.dtype.kind not in "US":
        raise DataError(
            f"{name}: 'class_names' must be a 1-D array of strings, got {raw.dtype} {tuple(raw.shape)}"
        )
    names = [x.decode() if isinstance(x, bytes) else str(x) for x in raw.tolist()]
    if len(names) != num_classes:
        raise DataError(
            f"{name}: 'class_names' has {len(names)} names but the labels define {num_classes} classes: "
            "give one name per class"
        )
    return names


def load_npz(path: str | Path, pre: Preprocessing, *, max_samples: int | None = None, seed: int = 0) -> Dataset:
    """Load, validate and preprocess a MedMNIST-layout ``.npz`` into a :class:`Dataset`.

    ``num_classes`` is max label + 1 over all splits (taken before ``max_samples`` so a
    capped run keeps the same classifier head). ``max_samples`` caps each split with the
    rows :meth:`Split.subset` would pick, chosen before preprocessing.
    """
    path = Path(path)
    check_max_samples(max_samples)
    arrays = _read_arrays(path)
    name = path.name
    layouts, labels = {}, {}
    for s in SPLITS:
        layouts[s] = _check_images(name, f"{s}_images", arrays[f"{s}_images"])
        labels[s] = _check_labels(name, f"{s}_labels", arrays[f"{s}_labels"], len(arrays[f"{s}_images"]))
    per_split = {s: layouts[s][0] for s in SPLITS}
    channels = set(per_split.values())
    if len(channels) > 1:
        raise DataError(
            f"{name}: splits mix grayscale and RGB images (channels per split: {per_split}): use one kind"
        )
    sizes = {layouts[s][1:] for s in SPLITS}
    if len(sizes) > 1 and pre.image_size is None:
        raise DataError(
            f"{name}: splits have different image sizes {sorted(sizes)}: pass --image-size N to resize them all"
        )
    num_classes = int(max(labels[s].max() for s in SPLITS)) + 1
    if num_classes < 2:
        raise DataError(f"{name}: labels contain fewer than 2 classes (all are 0): a classifier needs at least 2")
    class_names = _class_names(name, arrays.get("class_names"), num_classes)

    resolved = resolve(pre, channels.pop())
    native = layouts["train"][1:]
    out_hw = output_size(native, resolved)
    splits = {}
    for s in SPLITS:
        idx = subset_indices(len(labels[s]), max_samples, seed)
        images = preprocess(arrays[f"{s}_images"][idx], resolved)
        splits[s] = Split(images, torch.from_numpy(labels[s][idx]))
    extra = {
        "native_size": list(native),
        "source_sizes": {s: int(len(labels[s])) for s in SPLITS},
        "class_counts": {s: np.bincount(splits[s].labels.numpy(), minlength=num_classes).tolist() for s in SPLITS},
    }
    return Dataset(
        train=splits["train"], val=splits["val"], test=splits["test"], num_classes=num_classes,
        channels=resolved.channels, image_size=out_hw, class_names=class_names, format="npz",
        preprocessing=resolved, path=path, sha256=sha256_file(path), extra=extra,
    )
