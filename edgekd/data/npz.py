"""Datasets stored as one ``.npz`` file in the MedMNIST layout.

Arrays ``train_images``, ``train_labels``, ``val_images``, ``val_labels``, ``test_images``,
``test_labels``; images N×H×W (grayscale) or N×H×W×3 (RGB), uint8; labels N or N×1 integers
(0 … K−1). An optional 1-D string array ``class_names`` names the classes. The file is opened
with ``allow_pickle=False``: an ``.npz`` never runs code here.

Before any array is decompressed, every member's ``.npy`` header (shape, dtype) is read and
checked against :mod:`edgekd._limits` (decompressed size, image side, image count) and for
pickled object arrays, so a zip bomb or a pickle is refused without being loaded. Every value
error names the array and the index of the first bad sample.
"""
from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import torch

from .._io import sha256_file
from .._limits import human_bytes, limits
from ..config import Preprocessing
from ..errors import DataError
from ._base import Dataset, Split, check_every_class, first_index, shown
from .lazy import LazyImages, NpyRows, cached_npy, stream_train
from .preprocess import check_max_samples, image_layout, output_size, preprocess, resolve, subset_indices

SPLITS = ("train", "val", "test")
REQUIRED_KEYS = tuple(f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels"))
LAYOUT = (
    "train_images/train_labels, val_images/val_labels, test_images/test_labels "
    "(images N×H×W[×3] uint8, labels N or N×1 ints)"
)
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError, NotImplementedError)
MAX_CLASSES = 10_000  # labels above this are a mistake (e.g. raw ids instead of class indices)


def _headers(archive: np.lib.npyio.NpzFile) -> dict[str, tuple[tuple[int, ...], np.dtype] | None]:
    """Shape and dtype of each member from its .npy header (None: not a .npy member), nothing decompressed."""
    out: dict[str, tuple[tuple[int, ...], np.dtype] | None] = {}
    for member in archive.zip.namelist():
        key = member[:-4] if member.endswith(".npy") else member
        with archive.zip.open(member) as f:
            if f.read(6) != b"\x93NUMPY":
                out[key] = None
                continue
            f.seek(0)
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                shape, _, dtype = np.lib.format._read_array_header(f, version)  # 3.0: utf-8 field names
        out[key] = (tuple(int(d) for d in shape), np.dtype(dtype))
    return out


def _check_headers(name: str, headers: dict, wanted: list[str]) -> None:
    """Pickled object arrays, non-array members and the size limits, from headers only."""
    lim = limits()
    total, images = 0, 0
    for key in wanted:
        head = headers.get(key)
        if head is None:
            raise DataError(f"{name}: '{key}' is not a numpy array: re-save the file with numpy.savez")
        shape, dtype = head
        if dtype.hasobject:
            fix = "np.array(names, dtype=str)" if key == "class_names" else "a numeric array (images uint8, labels int)"
            raise DataError(f"{name}: '{key}' holds pickled Python objects (dtype object), which edgekd never loads "
                            f"(np.load allow_pickle=False: unpickling can run code): save it as {fix}")
        total += math.prod(shape) * dtype.itemsize
        if key.endswith("_images") and len(shape) >= 3:
            images += shape[0]
            if max(shape[1], shape[2]) > lim.max_image_side:
                raise DataError(f"{name}: '{key}' images are {shape[1]}×{shape[2]}, over the {lim.max_image_side}-pixel "
                                "side limit: downscale them, or raise EDGEKD_MAX_IMAGE_SIDE")
    if images > lim.max_images:
        raise DataError(f"{name} holds {images} images, over the limit of {lim.max_images}: use a subset, "
                        "or raise EDGEKD_MAX_IMAGES")
    if total > lim.max_data_bytes:
        raise DataError(f"{name} decompresses to {human_bytes(total)}, over the {human_bytes(lim.max_data_bytes)} "
                        "limit: use a subset or smaller images, or raise EDGEKD_MAX_DATA_MB")


_SAVEZ_SPLITS = ("save the splits with numpy.savez(path, train_images=..., train_labels=..., val_images=..., "
                 "val_labels=..., test_images=..., test_labels=...)")


def _open_archive(path: Path, savez_hint: str = _SAVEZ_SPLITS) -> np.lib.npyio.NpzFile:
    """The opened archive (``allow_pickle=False``), or a DataError for a missing, unreadable or non-npz file.

    ``savez_hint`` says how to re-save a file that holds a single array instead of an archive.
    """
    if not path.exists():
        raise DataError(f"npz file {path} not found: check the path (or pass a folder with train/ val/ test/)")
    if not path.is_file():
        raise DataError(f"{path} is not a file: pass a .npz file in the MedMNIST layout")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror or exc}): check its permissions") from None
    if magic.startswith(b"\x93NUMPY"):
        raise DataError(f"{path} holds a single array, not an .npz archive: {savez_hint}")
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise DataError(f"{path} is not an .npz archive (not a zip file; corrupt, or another format?): "
                        "re-download it or re-save it with numpy.savez")
    try:
        return np.load(path, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise DataError(
            f"{path} is not a readable .npz archive (corrupt or truncated? {shown(str(exc))}): "
            "re-download it or re-save it with numpy.savez"
        ) from exc


def _read_arrays(path: Path, stream: Callable[[tuple[int, ...]], bool] | None = None
                 ) -> tuple[dict[str, np.ndarray], str | None]:
    """Every array of the archive and, when the train images stream, the file's sha256; or a DataError for a
    missing, corrupt or incomplete file.

    ``stream(shape)`` says from the uint8 train images' header whether they are read lazily: they are
    then copied once, still uint8, into the data cache (:func:`edgekd.data.lazy.cached_npy`) and come
    back memory-mapped (for their header; rows are read with :class:`~edgekd.data.lazy.NpyRows`).
    """
    archive = _open_archive(path)
    digest = None
    with archive:
        missing = [k for k in REQUIRED_KEYS if k not in archive.files]
        if missing:
            has = ", ".join(shown(k) for k in archive.files[:20]) or "nothing"
            if all(f"{s}_masks" in archive.files for s in ("train", "val", "test")):
                raise DataError(f"{path.name} holds segmentation masks ({{split}}_masks), not labels: add "
                                "--task segmentation")
            raise DataError(
                f"{path.name} is missing {', '.join(missing)} (it has: {has}); "
                f"expected the MedMNIST layout: {LAYOUT}"
            )
        wanted = list(REQUIRED_KEYS) + (["class_names"] if "class_names" in archive.files else [])
        try:
            headers = _headers(archive)
        except _READ_ERRORS as exc:
            raise DataError(f"{path.name} is not a readable .npz archive (corrupt or truncated? "
                            f"{shown(str(exc))}): re-save it with numpy.savez") from exc
        _check_headers(path.name, headers, wanted)
        arrays: dict[str, np.ndarray] = {}
        shape, dtype = headers["train_images"]
        if stream is not None and dtype == np.uint8 and stream(shape):
            digest = sha256_file(path)
            arrays["train_images"] = cached_npy(digest, "train_images", shape, dtype,
                                                lambda f: _copy_member(archive, path.name, "train_images", f))
        for key in wanted:
            if key in arrays:
                continue
            try:
                arrays[key] = archive[key]
            except _READ_ERRORS as exc:
                raise DataError(
                    f"{path.name}: array '{key}' cannot be read ({shown(str(exc))}): "
                    "re-save it as a plain numeric array with numpy.savez"
                ) from exc
    return arrays, digest


def _copy_member(archive: np.lib.npyio.NpzFile, name: str, key: str, dest: BinaryIO, block: int = 1 << 22) -> None:
    """Stream one member's .npy bytes (header and data, decompressed) into ``dest``, one block in memory."""
    member = f"{key}.npy" if f"{key}.npy" in archive.zip.namelist() else key
    with archive.zip.open(member) as src:
        while True:
            try:
                data = src.read(block)
            except _READ_ERRORS as exc:  # a write error (dest) is not caught here: it is the cache's
                raise DataError(f"{name}: array '{key}' cannot be read (corrupt or truncated? {shown(str(exc))}): "
                                "re-download it or re-save it with numpy.savez") from None
            if not data:
                return
            dest.write(data)


def _check_images(name: str, key: str, images: np.ndarray) -> tuple[int, int, int]:
    """Rank, emptiness, dtype, finiteness and 0-255 range of one split's images (first bad image named)."""
    try:
        layout = image_layout(images)
    except DataError:
        raise DataError(
            f"{name}: '{key}' has shape {tuple(images.shape)}: expected N×H×W (grayscale) or N×H×W×3 (RGB) images "
            "with H, W >= 1"
        ) from None
    if images.shape[0] == 0:
        raise DataError(f"{name}: '{key}' has 0 samples: every split (train, val, test) needs at least one image")
    if images.dtype == np.uint8:
        return layout
    if images.dtype == np.bool_ or not (np.issubdtype(images.dtype, np.integer)
                                        or np.issubdtype(images.dtype, np.floating)):
        raise DataError(f"{name}: '{key}' has dtype {images.dtype}: store images as uint8 (0-255)")
    flat = images.reshape(len(images), -1)
    if np.issubdtype(images.dtype, np.floating):
        i = first_index(~np.isfinite(flat).all(axis=1))
        if i is not None:
            raise DataError(f"{name}: '{key}' image {i} has NaN/Inf pixels: clean or drop it (pixels must be 0-255)")
    i = first_index(((flat < 0) | (flat > 255)).any(axis=1))
    if i is not None:
        raise DataError(
            f"{name}: '{key}' image {i} has pixels in [{flat[i].min()}, {flat[i].max()}]: edgekd expects 0-255; "
            "rescale the images and save them as uint8"
        )
    hi = flat.max()
    if np.issubdtype(images.dtype, np.floating) and 0 < hi <= 1.0:
        raise DataError(
            f"{name}: '{key}' is float with max {hi:.3g}: it looks scaled to [0, 1] already; "
            "edgekd expects 0-255 pixels (save (x*255).astype(uint8))"
        )
    return layout


def _check_labels(name: str, key: str, labels: np.ndarray, n_images: int) -> np.ndarray:
    """Labels as int64 N: shape N or N×1, integral, in [0, MAX_CLASSES), one per image (first bad index named)."""
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
        i = first_index(~np.isfinite(labels))
        if i is not None:
            raise DataError(f"{name}: '{key}' has {labels[i]} at index {i}: labels must be integer class indices 0..K-1")
        i = first_index(labels != np.round(labels))
        if i is not None:
            raise DataError(f"{name}: '{key}' has the non-integer label {labels[i]} at index {i}: "
                            "labels must be class indices 0..K-1")
    elif not np.issubdtype(labels.dtype, np.integer) and labels.dtype != np.bool_:
        raise DataError(f"{name}: '{key}' has dtype {labels.dtype}: labels must be integer class indices 0..K-1")
    i = first_index(labels < 0)
    if i is not None:
        raise DataError(f"{name}: '{key}' has the negative label {labels[i]} at index {i}: use class indices 0..K-1")
    i = first_index(labels >= MAX_CLASSES)
    if i is not None:
        raise DataError(f"{name}: '{key}' has the label {labels[i]} at index {i}, over the {MAX_CLASSES}-class limit: "
                        "labels must be class indices 0..K-1, not raw ids")
    return labels.astype(np.int64)


def _class_names(name: str, raw: np.ndarray | None) -> list[str] | None:
    """The file's class names, or None when it has none."""
    if raw is None:
        return None
    if raw.ndim != 1 or raw.dtype.kind not in "US" or raw.size == 0:
        raise DataError(
            f"{name}: 'class_names' must be a non-empty 1-D array of strings, got {raw.dtype} {tuple(raw.shape)}: "
            "save np.array(names, dtype=str)"
        )
    try:
        return [x.decode() if isinstance(x, bytes) else str(x) for x in raw.tolist()]
    except UnicodeDecodeError:
        raise DataError(f"{name}: 'class_names' holds bytes that are not UTF-8 text: save np.array(names, dtype=str)") from None


def _num_classes(name: str, labels: dict[str, np.ndarray], names: list[str] | None) -> int:
    """K: the number of class names when given (every label must be below it), else max label + 1."""
    if names is not None:
        for s in SPLITS:
            i = first_index(labels[s] >= len(names))
            if i is not None:
                raise DataError(f"{name}: '{s}_labels' has the label {labels[s][i]} at index {i} but 'class_names' "
                                f"has {len(names)} names: labels must be 0..{len(names) - 1}, or add the missing names")
        k = len(names)
    else:
        k = int(max(labels[s].max() for s in SPLITS)) + 1
    if k < 2:
        raise DataError(f"{name}: labels contain fewer than 2 classes (all are 0): a classifier needs at least 2")
    return k


def load_npz(path: str | Path, pre: Preprocessing, *, max_samples: int | None = None, seed: int = 0) -> Dataset:
    """Load, validate and preprocess a MedMNIST-layout ``.npz`` into a :class:`Dataset`.

    ``num_classes`` is the number of ``class_names`` when the file has them, else max label + 1
    over all splits (taken before ``max_samples`` so a capped run keeps the same classifier
    head). ``max_samples`` caps each split with the rows :meth:`Split.subset` would pick,
    chosen before preprocessing. Every class must have samples in every (capped) split.
    Large uint8 train images (or any, with ``EDGEKD_STREAM=1``) are not loaded: they are cached as an
    uint8 ``.npy`` and ``train.images`` is a :class:`~edgekd.data.lazy.LazyImages` reading its rows.
    """
    path = Path(path)
    check_max_samples(max_samples)
    arrays, digest = _read_arrays(path, lambda shape: _streams(shape, pre, max_samples))
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
    names = _class_names(name, arrays.get("class_names"))
    num_classes = _num_classes(name, labels, names)
    class_names = names or [f"class_{i}" for i in range(num_classes)]

    resolved = resolve(pre, channels.pop())
    native = layouts["train"][1:]
    out_hw = output_size(native, resolved)
    idx = {s: subset_indices(len(labels[s]), max_samples, seed) for s in SPLITS}
    check_every_class(name, labels, {s: labels[s][idx[s]] for s in SPLITS}, class_names, max_samples)
    splits = {}
    for s in SPLITS:
        raw = arrays[f"{s}_images"]
        if s == "train" and digest is not None:  # read from the data cache and preprocessed per request
            images = LazyImages(NpyRows(Path(raw.filename)), resolved, out_hw,
                                rows=None if len(idx[s]) == len(raw) else idx[s])
        else:
            images = preprocess(raw[idx[s]], resolved)
        splits[s] = Split(images, torch.from_numpy(labels[s][idx[s]]))
    extra = {
        "native_size": list(native),
        "source_sizes": {s: int(len(labels[s])) for s in SPLITS},
        "class_counts": {s: np.bincount(splits[s].labels.numpy(), minlength=num_classes).tolist() for s in SPLITS},
    }
    return Dataset(
        train=splits["train"], val=splits["val"], test=splits["test"], num_classes=num_classes,
        channels=resolved.channels, image_size=out_hw, class_names=class_names, format="npz",
        preprocessing=resolved, path=path, sha256=digest or sha256_file(path), extra=extra,
    )


def _streams(shape: tuple[int, ...], pre: Preprocessing, max_samples: int | None) -> bool:
    """Whether train images of this header shape are read lazily (:func:`edgekd.data.lazy.stream_train`).

    A shape or size that validation will reject answers False: the in-memory path gives its error.
    """
    size = pre.image_size
    if len(shape) not in (3, 4) or (size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)))):
        return False
    n = shape[0] if max_samples is None else min(shape[0], max_samples)
    channels = 1 if len(shape) == 3 else shape[3]
    return stream_train(n, channels, (size, size) if size is not None else shape[1:3])
