"""Datasets stored as image files: ``root/{train,val,test}/<class>/*.{png,jpg,jpeg,bmp,tif,tiff}``.

Class names are the sorted sub-folder names of ``train/``; ``val/`` and ``test/`` must hold the
same class folders. Files with other extensions and hidden files are ignored.

Channels: when every image is single-channel (PIL modes ``1``, ``L``, ``LA``, ``I;16*``, ``I``)
the dataset is grayscale (1 channel); as soon as one image is colour, every image is converted
to RGB (3 channels; grayscale ones are repeated into R, G and B). 16-bit and 32-bit integer
grayscale pixels are mapped to 0-255 by dividing by 257 (65535 -> 255; values outside
0-65535 are clipped), so a 16-bit X-ray keeps its full precision as a float until the model.

Sizes: images may differ in size only when ``pre.image_size`` is given (each is then resized
to N×N); otherwise they must all be equal. Limits (:mod:`edgekd._limits`): at most
``EDGEKD_MAX_IMAGES`` files, each at most ``EDGEKD_MAX_IMAGE_SIDE`` pixels wide and high, checked
from the file headers before any pixels are decoded (decompression-bomb protection).
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .._io import sha256_tree
from .._limits import limits
from .._progress import track
from ..config import Preprocessing
from ..errors import DataError
from ._base import Dataset, Split, check_every_class, shown
from .lazy import LazyFiles, stream_train
from .preprocess import (
    check_max_samples,
    output_size,
    preprocess,
    resolve,
    subset_indices,
)

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N"})
_BATCH_PIXELS = 1 << 24  # decoded pixels preprocessed together
LAYOUT = "root/train/<class>/*.png, root/val/<class>/..., root/test/<class>/... (png, jpg, jpeg, bmp, tif, tiff)"


@dataclass
class _Item:
    path: Path
    label: int
    mode: str = ""
    size: tuple[int, int] = (0, 0)  # (H, W)


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(root: Path) -> tuple[list[str], dict[str, list[_Item]]]:
    """Class names and every split's image files (ordered by class, then file name)."""
    if not root.is_dir():
        raise DataError(f"image folder {shown(str(root))} not found: expected {LAYOUT}")
    for s in SPLITS:
        if not (root / s).is_dir():
            raise DataError(f"{shown(str(root))} has no '{s}/' folder: expected {LAYOUT}")
    classes = _class_dirs(root / "train")
    if not classes:
        raise DataError(f"{shown(str(root / 'train'))} has no class folders: put each class's images in train/<class>/")
    if len(classes) < 2:
        raise DataError(f"{shown(str(root / 'train'))} has only one class folder ({shown(classes[0])}): a classifier needs at least 2")
    items: dict[str, list[_Item]] = {}
    for s in SPLITS:
        found = _class_dirs(root / s)
        if s != "train" and set(found) != set(classes):
            missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
            raise DataError(
                f"{shown(str(root / s))} has different class folders from train/ (missing: {missing or 'none'}, "
                f"extra: {extra or 'none'}): every split needs the same class folders"
            )
        items[s] = []
        for label, cls in enumerate(classes):
            files = _image_files(root / s / cls)
            if not files:
                raise DataError(
                    f"empty class folder {s}/{shown(cls)} in {shown(str(root))}: add images ({', '.join(IMAGE_EXTENSIONS)}) to it"
                )
            items[s].extend(_Item(p, label) for p in files)
    total, cap = sum(len(v) for v in items.values()), limits().max_images
    if total > cap:
        raise DataError(f"{shown(str(root))} holds {total} images, over the limit of {cap}: use a subset, or raise EDGEKD_MAX_IMAGES")
    return classes, items


def _rel(item: _Item, root: Path) -> str:
    return shown(item.path.relative_to(root).as_posix())


def _unreadable(item: _Item, root: Path, exc: Exception) -> DataError:
    return DataError(f"cannot read image {_rel(item, root)} in {shown(str(root))} ({type(exc).__name__}: "
                     f"{shown(str(exc))}): remove or re-export that file")


def _too_large(item: _Item, root: Path, side: int) -> DataError:
    h, w = item.size
    size = f"{h}×{w}" if h else "too large"
    return DataError(f"image {_rel(item, root)} in {shown(str(root))} is {size}, over the {side}-pixel side limit: "
                     "downscale it, or raise EDGEKD_MAX_IMAGE_SIDE")


@contextmanager
def _pil_guard(side: int) -> Iterator[None]:
    """PIL's decompression-bomb bound set to our side limit (side² pixels; PIL refuses above twice that),
    its warning silenced: the side check below gives the message."""
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = side * side
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def _probe(items: list[_Item], root: Path, split: str) -> None:
    """Fill in mode and size from each file's header (cheap: pixels are not decoded)."""
    from PIL import Image

    side = limits().max_image_side
    with _pil_guard(side):
        for item in track(items, f"checking {split} images"):
            try:
                with Image.open(item.path) as img:
                    item.mode, (w, h) = img.mode, img.size
            except Image.DecompressionBombError:
                raise _too_large(item, root, side) from None
            except Exception as exc:  # PIL raises many types for a bad file
                raise _unreadable(item, root, exc) from exc
            item.size = (h, w)
            if item.mode == "F":
                raise DataError(f"{_rel(item, root)} in {shown(str(root))} is a 32-bit float image: "
                                "save it as 8- or 16-bit (png/tif)")
            if max(h, w) > side:
                raise _too_large(item, root, side)
            if min(h, w) < 1:
                raise _unreadable(item, root, ValueError(f"the header says {h}×{w} pixels"))


def _decode(item: _Item, root: Path, channels: int) -> np.ndarray:
    """Pixels in 0-255 as H×W (channels=1) or H×W×3: uint8, or float32 for 16/32-bit gray."""
    from PIL import Image

    try:
        with _pil_guard(limits().max_image_side), Image.open(item.path) as img:
            img.load()
            if img.mode not in GRAY_MODES:
                pixels = np.asarray(img.convert("RGB"))
            elif img.mode in ("1", "L", "LA"):
                pixels = np.asarray(img.convert("L"))
            else:
                pixels = (np.clip(np.asarray(img).astype(np.float32), 0, 65535) / 257.0).astype(np.float32)
    except Exception as exc:
        raise _unreadable(item, root, exc) from exc
    if pixels.shape[:2] != item.size or (pixels.ndim == 3) != (img.mode not in GRAY_MODES):
        raise _unreadable(item, root, ValueError(f"decoded {pixels.shape} pixels, the header said {item.size}"))
    if pixels.ndim == 3 or channels == 1:
        return pixels
    return np.repeat(pixels[:, :, None], 3, axis=2)


def _load_split(items: list[_Item], root: Path, split: str, pre: Preprocessing, out_hw: tuple[int, int],
                decode=None) -> Split:
    """Decode and preprocess a split in batches of equal-sized images (one batch in memory).

    ``decode(item, root, channels)`` gives one image's 0-255 pixels (default: the image file's, :func:`_decode`).
    """
    decode = decode or _decode
    channels = int(pre.channels or 1)
    out = torch.empty((len(items), channels, *out_hw), dtype=torch.float32)
    batch: list[np.ndarray] = []
    start = 0

    def flush() -> None:
        nonlocal start, batch
        if batch:
            out[start : start + len(batch)] = preprocess(np.stack(batch), pre)
            start, batch = start + len(batch), []

    for item in track(items, f"reading {split} images"):
        pixels = decode(item, root, channels)
        if batch and (pixels.shape != batch[0].shape or len(batch) * pixels.size >= _BATCH_PIXELS):
            flush()
        batch.append(pixels)
    flush()
    labels = torch.tensor([item.label for item in items], dtype=torch.int64)
    return Split(out, labels)


def _lazy_split(items: list[_Item], root: Path, pre: Preprocessing, out_hw: tuple[int, int]) -> Split:
    """A split whose images are decoded and preprocessed per request (every file's header is checked already)."""
    channels = int(pre.channels or 1)
    images = LazyFiles(len(items), channels, out_hw, lambda i: _decode(items[i], root, channels), pre)
    return Split(images, torch.tensor([item.label for item in items], dtype=torch.int64))


def _scan_or_explain(root: Path) -> tuple[list[str], dict[str, list[_Item]]]:
    """:func:`_scan`, with an unlistable folder (permissions, a broken link) as a DataError."""
    try:
        return _scan(root)
    except OSError as exc:
        where = shown(str(exc.filename or root))
        raise DataError(f"cannot list {where} ({exc.strerror or type(exc).__name__}): check the folder's permissions") from None


def load_folder(path: str | Path, pre: Preprocessing, *, max_samples: int | None = None, seed: int = 0) -> Dataset:
    """Load, validate and preprocess an image-folder dataset into a :class:`Dataset`.

    Every file's header is checked (mode, size) before any pixels are decoded, so the channel
    decision and size checks cover the whole dataset even when ``max_samples`` caps each split
    (the capped rows are those :meth:`Split.subset` would pick). A large train split (or any, with
    ``EDGEKD_STREAM=1``) is not decoded here: ``train.images`` is a :class:`~edgekd.data.lazy.LazyFiles`
    that decodes and preprocesses the files each request names.
    """
    root = Path(path)
    check_max_samples(max_samples)
    classes, items = _scan_or_explain(root)
    for s in SPLITS:
        _probe(items[s], root, s)
    every = [it for s in SPLITS for it in items[s]]
    channels, resolved, out_hw = _channels_and_size(every, root, pre, "all")
    chosen = {s: [items[s][i] for i in subset_indices(len(items[s]), max_samples, seed)] for s in SPLITS}
    check_every_class(shown(str(root)), {s: np.array([it.label for it in items[s]]) for s in SPLITS},
                      {s: np.array([it.label for it in chosen[s]]) for s in SPLITS}, classes, max_samples)
    streamed = stream_train(len(chosen["train"]), channels, out_hw)
    splits = {s: _lazy_split(chosen[s], root, resolved, out_hw) if s == "train" and streamed
              else _load_split(chosen[s], root, s, resolved, out_hw) for s in SPLITS}
    extra = {
        "native_sizes": [list(hw) for hw in sorted({it.size for it in every})[:10]],
        "image_modes": sorted({it.mode for it in every}),
        "source_sizes": {s: len(items[s]) for s in SPLITS},
        "class_counts": {s: np.bincount(splits[s].labels.numpy(), minlength=len(classes)).tolist() for s in SPLITS},
    }
    return Dataset(
        train=splits["train"], val=splits["val"], test=splits["test"], num_classes=len(classes),
        channels=channels, image_size=out_hw, class_names=classes, format="folder",
        preprocessing=resolved, path=root, sha256=sha256_tree(root), extra=extra,
    )


def _channels_and_size(every: list, root: Path, pre: Preprocessing, what: str):
    """(channels, resolved preprocessing, output H×W) of a folder's images, probed from their headers.

    Gray when every image is; one size for all unless ``--image-size`` resizes them (``what`` names
    what it resizes, e.g. "all (and their masks)"), else a one-line DataError with two examples.
    """
    channels = 1 if all(it.mode in GRAY_MODES for it in every) else 3
    sizes = sorted({it.size for it in every})
    if len(sizes) > 1 and pre.image_size is None:
        a, b = (next(it for it in every if it.size == hw) for hw in (sizes[0], sizes[-1]))
        raise DataError(
            f"images in {shown(str(root))} have different sizes (e.g. {_rel(a, root)} is {a.size[0]}×{a.size[1]}, "
            f"{_rel(b, root)} is {b.size[0]}×{b.size[1]}): pass --image-size N to resize {what} to N×N"
        )
    resolved = resolve(pre, channels)
    return channels, resolved, output_size(sizes[0], resolved)
