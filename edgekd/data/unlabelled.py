"""Unlabelled images (``--unlabelled PATH``): extra training inputs that only the teacher labels.

Two sources are accepted:

* **a folder of images**, read recursively (``png, jpg, jpeg, bmp, tif, tiff``; hidden files and
  folders and other extensions are ignored), in sorted path order. Sub-folders are only a way to
  organise files: they are not classes. A folder with ``val/`` or ``test/`` at its top (the
  labelled layout ``train/ val/ test/``) is refused: held-out images must never be trained on.
* **an .npz holding images only**: an ``images`` array, or else ``train_images`` (a MedMNIST
  file with its labels removed; its ``val_images`` / ``test_images`` are not read, they stay
  held out). Any array whose name contains ``labels`` is refused: labelled data goes to
  ``--data``.

Pixels are checked and preprocessed exactly as the labelled data's are (the same readers'
checks, then :func:`edgekd.data.preprocess.preprocess` with the labelled data's resolved
preprocessing), so both land in the same N×C×H×W float32 space.

Channels follow the folder loader's rule for mixed folders: grayscale joins RGB data by
repeating into R, G and B. Colour never becomes grayscale by a formula the device does not
apply; an RGB image joins grayscale data only when it is grey already (its three channels
differ by at most :data:`GRAY_TOLERANCE` levels, as JPEG rounding leaves them), and then its
channel mean is used. Sizes: with ``--image-size`` every image is resized like the labelled
ones; without it, every image must already have the labelled data's size.

Limits (:mod:`edgekd._limits`) apply as to labelled data: the image count, each image's side
and the npz's decompressed size, all from headers before any pixel is decoded.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .._io import sha256_file
from .._limits import limits
from .._progress import track
from ..config import Preprocessing
from ..errors import DataError
from ._base import first_index, shown
from .folder import GRAY_MODES, IMAGE_EXTENSIONS, SPLITS, _decode, _Item, _probe
from .npz import _check_headers, _check_images, _headers, _open_archive
from .preprocess import output_size, preprocess, resolve, subset_indices

OPTION = "--unlabelled"
NPZ_KEYS = ("images", "train_images")  # the first present is read
GRAY_TOLERANCE = 2  # max channel difference (0-255 levels) for an RGB image to count as grey
ACCEPTED = "a folder of images (png, jpg, jpeg, bmp, tif, tiff) or an .npz with an 'images' array"
_CHUNK_PIXELS = 1 << 24


@dataclass
class Unlabelled:
    images: torch.Tensor  # float32 N×C×H×W, preprocessed like the labelled data
    sha256: str  # npz: the file; folder: every image file found (relative path + bytes, sorted)
    source: str  # "folder" or "npz"
    count: int  # images returned (after max_images)
    found: int = 0  # images in the source before max_images
    path: Path | None = None
    notes: list[str] = field(default_factory=list)  # conversions applied, one line each (for the report)


def _check_cap(max_images: int | None) -> None:
    if max_images is None:
        return
    if isinstance(max_images, bool) or not isinstance(max_images, (int, np.integer)) or max_images < 1:
        raise DataError(f"the unlabelled image cap must be a positive integer or None, got {max_images!r}")


def _reconcile(pixels: np.ndarray, channels: int, where: Callable[[int], str]) -> tuple[np.ndarray, str | None]:
    """A batch N×H×W[×3] as the labelled data's channel count, and a note when converted (see the module doc)."""
    colour = pixels.ndim == 4 and pixels.shape[3] == 3
    if pixels.ndim == 4 and pixels.shape[3] == 1:
        pixels, colour = pixels[..., 0], False
    if channels == 3 and not colour:
        return np.repeat(pixels[..., None], 3, axis=3), "grayscale images repeated into R, G and B"
    if channels == 1 and colour:
        p = pixels.astype(np.float32, copy=False)
        spread = np.maximum(np.abs(p[..., 0] - p[..., 1]), np.abs(p[..., 1] - p[..., 2]))
        i = first_index(spread.reshape(len(p), -1).max(axis=1) > GRAY_TOLERANCE)
        if i is not None:
            raise DataError(f"{where(i)} is a colour image but the labelled data is "
                            "grayscale (1 channel): convert the unlabelled images to grayscale, or give RGB data")
        return p.mean(axis=3), "grey images stored as RGB read as one channel (channel mean)"
    return pixels, None


def _check_size(native: tuple[int, int], pre: Preprocessing, image_size: tuple[int, int], where: str) -> None:
    if pre.image_size is None and tuple(native) != tuple(image_size):
        raise DataError(f"{where} is {native[0]}×{native[1]} but the labelled images are "
                        f"{image_size[0]}×{image_size[1]}: pass --image-size N to resize both, or resize them")


# ---------------------------------------------------------------- folder

def _walk(root: Path) -> list[Path]:
    files: list[Path] = []
    for top, dirs, names in os.walk(root, onerror=_raise):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(Path(top) / n for n in names
                     if not n.startswith(".") and Path(n).suffix.lower() in IMAGE_EXTENSIONS)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _raise(exc: OSError) -> None:
    raise exc


def _folder_sha(root: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for p in files:
        h.update(p.relative_to(root).as_posix().encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def _from_folder(root: Path, pre: Preprocessing, channels: int, image_size: tuple[int, int],
                 max_images: int | None) -> Unlabelled:
    held_out = [s for s in SPLITS[1:] if (root / s).is_dir()]
    if held_out:
        raise DataError(f"{shown(str(root))} has a {held_out[0]}/ folder like a labelled image-folder dataset (train/ "
                        f"val/ test/), whose held-out images must not be trained on: give it as --data, or point "
                        f"{OPTION} at a folder of images only")
    try:
        files = _walk(root)
    except OSError as exc:
        where = shown(str(exc.filename or root))
        raise DataError(f"cannot list {where} ({exc.strerror or type(exc).__name__}): check the folder's "
                        "permissions") from None
    if not files:
        raise DataError(f"{OPTION} folder {shown(str(root))} has no images ({', '.join(IMAGE_EXTENSIONS)}): "
                        "add images, or check the path")
    cap = limits().max_images
    if len(files) > cap:
        raise DataError(f"{shown(str(root))} holds {len(files)} images, over the limit of {cap}: use a subset, "
                        "or raise EDGEKD_MAX_IMAGES")
    items = [_Item(p, -1) for p in files]
    _probe(items, root, "unlabelled")
    chosen = [items[i] for i in subset_indices(len(items), max_images)]
    for it in chosen:
        _check_size(it.size, pre, image_size, f"unlabelled image {shown(it.path.relative_to(root).as_posix())}")
    out = torch.empty((len(chosen), channels, *image_size), dtype=torch.float32)
    notes: set[str] = set()
    batch: list[np.ndarray] = []
    names: list[str] = []
    start = 0

    def flush() -> None:
        nonlocal start, batch, names
        if batch:
            first = names
            pixels, note = _reconcile(np.stack(batch), channels, lambda i: f"unlabelled image {first[i]}")
            notes.update([note] if note else [])
            out[start : start + len(batch)] = preprocess(pixels, pre)
            start, batch, names = start + len(batch), [], []

    for it in track(chosen, "reading unlabelled images"):
        pixels = _decode(it, root, channels)  # grayscale repeated into RGB for RGB data; colour stays colour
        if batch and (pixels.shape != batch[0].shape or len(batch) * pixels.size >= _CHUNK_PIXELS):
            flush()
        batch.append(pixels)
        names.append(shown(it.path.relative_to(root).as_posix()))
    flush()
    if channels == 3 and any(it.mode in GRAY_MODES for it in chosen):  # _decode repeated them already
        notes.add("grayscale images repeated into R, G and B")
    return Unlabelled(out, _folder_sha(root, files), "folder", len(chosen), len(files), root, sorted(notes))


# ---------------------------------------------------------------- npz

def _from_npz(path: Path, pre: Preprocessing, channels: int, image_size: tuple[int, int],
              max_images: int | None) -> Unlabelled:
    name = path.name
    with _open_archive(path, "save the images with numpy.savez(path, images=...)") as archive:
        labels = [k for k in archive.files if "labels" in k.lower()]
        if labels:
            raise DataError(f"{name} has labels ({', '.join(shown(k) for k in labels[:3])}): give it as --data, or "
                            f"remove the labels to use it as unlabelled images")
        key = next((k for k in NPZ_KEYS if k in archive.files), None)
        if key is None:
            has = ", ".join(shown(k) for k in archive.files[:20]) or "nothing"
            raise DataError(f"{name} has no 'images' array (it has: {has}): save the unlabelled images with "
                            "numpy.savez(path, images=...) (N×H×W or N×H×W×3, uint8)")
        try:
            headers = _headers(archive)
        except Exception as exc:  # noqa: BLE001 - zip/npy header errors of many types
            raise DataError(f"{name} is not a readable .npz archive (corrupt or truncated? {shown(str(exc))}): "
                            "re-save it with numpy.savez") from exc
        _check_headers(name, headers, [key])
        shape = headers[key][0] if headers.get(key) else ()
        lim = limits()
        if len(shape) >= 3:  # 'images' is not counted by _check_headers (it counts *_images)
            if shape[0] > lim.max_images:
                raise DataError(f"{name} holds {shape[0]} images, over the limit of {lim.max_images}: use a subset, "
                                "or raise EDGEKD_MAX_IMAGES")
            if max(shape[1], shape[2]) > lim.max_image_side:
                raise DataError(f"{name}: '{key}' images are {shape[1]}×{shape[2]}, over the {lim.max_image_side}-"
                                "pixel side limit: downscale them, or raise EDGEKD_MAX_IMAGE_SIDE")
        try:
            images = archive[key]
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{name}: array '{key}' cannot be read ({shown(str(exc))}): re-save it as a plain "
                            "numeric array with numpy.savez") from exc
    if images.ndim >= 1 and images.shape[0] == 0:
        raise DataError(f"{name}: '{key}' has 0 images: give at least one, or drop {OPTION}")
    _, h, w = _check_images(name, key, images)
    _check_size((h, w), pre, image_size, f"{name}: '{key}'")
    idx = subset_indices(len(images), max_images)
    out = torch.empty((len(idx), channels, *image_size), dtype=torch.float32)
    notes: set[str] = set()
    step = max(1, _CHUNK_PIXELS // (3 * h * w))
    for s in range(0, len(idx), step):
        rows = idx[s : s + step]
        pixels, note = _reconcile(images[rows], channels, lambda i, rows=rows: f"{name}: '{key}' image {rows[i]}")
        notes.update([note] if note else [])
        out[s : s + len(rows)] = preprocess(pixels, pre)
    return Unlabelled(out, sha256_file(path), "npz", len(idx), int(len(images)), path, sorted(notes))


def load_unlabelled(path: Path, preprocessing: Preprocessing, *, channels: int, image_size: tuple[int, int],
                    max_images: int | None = None) -> Unlabelled:
    """Read, check and preprocess unlabelled images to match labelled data with ``channels`` and ``image_size``.

    ``preprocessing`` is the labelled data's (``Dataset.preprocessing``), ``channels`` and
    ``image_size`` its ``Dataset.channels`` and ``Dataset.image_size`` (H, W after
    preprocessing). ``max_images`` keeps that many, the rows :meth:`Split.subset` would pick
    (seed 0). Every bad input is one :class:`DataError` line.
    """
    path = Path(path).expanduser()
    _check_cap(max_images)
    pre = resolve(preprocessing, channels)
    if tuple(output_size(tuple(image_size), pre)) != tuple(image_size):
        raise DataError(f"internal: labelled images are {tuple(image_size)} but the preprocessing resizes to "
                        f"{pre.image_size}×{pre.image_size}")
    if not path.exists():
        raise DataError(f"{OPTION} path {shown(str(path))} does not exist: pass {ACCEPTED}")
    if path.is_dir():
        return _from_folder(path, pre, channels, tuple(image_size), max_images)
    if path.suffix.lower() == ".npz":
        return _from_npz(path, pre, channels, tuple(image_size), max_images)
    raise DataError(f"{OPTION} {shown(str(path))} is neither a folder nor an .npz file: pass {ACCEPTED}")
