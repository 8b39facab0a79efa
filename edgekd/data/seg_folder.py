"""Segmentation datasets stored as image files: ``root/{train,val,test}/{images,masks}/``.

Every image in ``images/`` (png, jpg, jpeg, bmp, tif, tiff) has one mask in ``masks/`` with the
same name up to the extension (``case7.jpg`` ↔ ``case7.png``), the same width and height.
A mask is a lossless single-channel file (png, bmp, tif; PIL modes ``1``, ``L``, ``P``, ``I``,
``I;16``) whose pixel values are class indices 0..K−1, or 0/255 (or 0/1) for a binary mask
(rules: :mod:`._seg_base`); a palette (``P``) PNG is read as its indices, not its colours.
Hidden files and other extensions are ignored.

Images are read exactly as by the classification folder reader (:mod:`.folder`: channels,
16-bit grey, size limits checked from the headers before decoding) and preprocessed alike.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import sha256_tree
from .._limits import limits
from .._progress import track
from ..config import Preprocessing
from ..errors import DataError
from ._base import shown
from ._seg_base import (
    MaskStats,
    SegDataset,
    SegSplit,
    check_num_classes,
    classes_of,
    default_class_names,
    finish_masks,
    mask_stats,
    resize_masks,
    seg_extra,
)
from .folder import (
    IMAGE_EXTENSIONS,
    _channels_and_size,
    _image_files,
    _Item,
    _load_split,
    _pil_guard,
    _probe,
    _rel,
    _unreadable,
)
from .preprocess import check_max_samples, subset_indices

SPLITS = ("train", "val", "test")
MASK_MODES = frozenset({"1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N"})
LOSSY = (".jpg", ".jpeg")
LAYOUT = "root/train/images/*.png + root/train/masks/*.png (same names), and the same for val/ and test/"


def _by_stem(files: list[Path], root: Path, where: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise DataError(f"{where} in {shown(str(root))} has two files named '{shown(p.stem)}' "
                            f"({shown(out[p.stem].name)}, {shown(p.name)}): masks are matched to images by name "
                            "without extension; rename one")
        out[p.stem] = p
    return out


def _scan(root: Path) -> dict[str, list[tuple[_Item, _Item]]]:
    """Each split's (image, mask) pairs, ordered by file name; every unpaired file is an error."""
    if not root.is_dir():
        raise DataError(f"segmentation folder {shown(str(root))} not found: expected {LAYOUT}")
    pairs: dict[str, list[tuple[_Item, _Item]]] = {}
    for s in SPLITS:
        for sub in ("images", "masks"):
            if not (root / s / sub).is_dir():
                raise DataError(f"{shown(str(root))} has no '{s}/{sub}/' folder: expected {LAYOUT}")
        images = _by_stem(_image_files(root / s / "images"), root, f"{s}/images/")
        masks = _by_stem(_image_files(root / s / "masks"), root, f"{s}/masks/")
        if not images and not masks:
            raise DataError(f"empty split {s}/ in {shown(str(root))}: add images to {s}/images/ and their masks "
                            f"to {s}/masks/ ({', '.join(IMAGE_EXTENSIONS)})")
        for stem, img in images.items():
            if stem not in masks:
                raise DataError(f"image {s}/images/{shown(img.name)} in {shown(str(root))} has no mask "
                                f"({s}/masks/{shown(stem)}.png): add it, or remove the image")
        for stem, mask in masks.items():
            if stem not in images:
                raise DataError(f"mask {s}/masks/{shown(mask.name)} in {shown(str(root))} has no image "
                                f"({s}/images/{shown(stem)}.*): add it, or remove the mask")
            if mask.suffix.lower() in LOSSY:
                raise DataError(f"mask {s}/masks/{shown(mask.name)} in {shown(str(root))} is a JPEG, whose lossy "
                                "compression changes label values: save masks as PNG")
        pairs[s] = [(_Item(images[t], 0), _Item(masks[t], 0)) for t in sorted(images)]
    total, cap = sum(len(v) for v in pairs.values()), limits().max_images
    if total > cap:
        raise DataError(f"{shown(str(root))} holds {total} images, over the limit of {cap}: use a subset, "
                        "or raise EDGEKD_MAX_IMAGES")
    return pairs


def _check_pairs(pairs: list[tuple[_Item, _Item]], root: Path) -> None:
    """After probing: each mask single-channel and the size of its image."""
    for img, mask in pairs:
        if mask.mode not in MASK_MODES:
            raise DataError(f"mask {_rel(mask, root)} in {shown(str(root))} has mode {mask.mode}: save masks as "
                            "single-channel PNGs (mode L or P) of class indices, or 0/255 for a binary mask")
        if mask.size != img.size:
            raise DataError(f"mask {_rel(mask, root)} in {shown(str(root))} is {mask.size[0]}×{mask.size[1]} but "
                            f"its image {_rel(img, root)} is {img.size[0]}×{img.size[1]}: each mask must be the size "
                            "of its image")


def _decode_mask(item: _Item, root: Path) -> np.ndarray:
    """The H×W integer values of a mask file (a palette PNG: its indices)."""
    from PIL import Image

    try:
        with _pil_guard(limits().max_image_side), Image.open(item.path) as img:
            img.load()
            values = np.asarray(img, dtype=np.uint8) if img.mode == "1" else np.asarray(img)
    except Exception as exc:  # PIL raises many types for a bad file
        raise _unreadable(item, root, exc) from exc
    if values.shape != item.size:
        raise _unreadable(item, root, ValueError(f"decoded {values.shape} pixels, the header said {item.size}"))
    return values


def _read_masks(pairs: dict[str, list[tuple[_Item, _Item]]], chosen: dict[str, np.ndarray], root: Path,
                out_hw: tuple[int, int]) -> tuple[MaskStats, dict[str, np.ndarray]]:
    """Statistics of every mask (the value rules cover the whole dataset) and the chosen ones, resized."""
    rows, names, kept = [], [], {}
    for s in SPLITS:
        keep = set(chosen[s].tolist())
        kept[s] = []
        for i, (_, mask) in enumerate(track(pairs[s], f"reading {s} masks")):
            values = _decode_mask(mask, root)
            rows.append(mask_stats(values[None]))
            names.append(f"mask {_rel(mask, root)} in {shown(str(root))}")
            if i in keep:
                kept[s].append(resize_masks(values[None], out_hw)[0])
    stats = MaskStats(*(np.concatenate([r[j] for r in rows]) for j in range(4)), name=lambda i: names[i])
    return stats, {s: np.stack(kept[s]) for s in SPLITS}


def _scan_or_explain(root: Path) -> dict[str, list[tuple[_Item, _Item]]]:
    try:
        return _scan(root)
    except OSError as exc:
        where = shown(str(exc.filename or root))
        raise DataError(f"cannot list {where} ({exc.strerror or type(exc).__name__}): "
                        "check the folder's permissions") from None


def load_seg_folder(path: str | Path, pre: Preprocessing, *, num_classes: int | None = None,
                    max_samples: int | None = None, seed: int = 0) -> SegDataset:
    """Load, validate and preprocess a segmentation image folder into a :class:`SegDataset`.

    Every image and mask header is checked before pixels are decoded; every mask is decoded for
    the value rules (K inferred from all splits even when ``max_samples`` caps them; the capped
    rows are those :meth:`SegSplit.subset` would pick).
    """
    root = Path(path)
    check_max_samples(max_samples)
    check_num_classes(num_classes)
    pairs = _scan_or_explain(root)
    for s in SPLITS:
        _probe([img for img, _ in pairs[s]], root, s)
        _probe([mask for _, mask in pairs[s]], root, f"{s} mask")
        _check_pairs(pairs[s], root)
    every = [img for s in SPLITS for img, _ in pairs[s]]
    channels, resolved, out_hw = _channels_and_size(every, root, pre, "all (and their masks)")
    chosen = {s: subset_indices(len(pairs[s]), max_samples, seed) for s in SPLITS}
    stats, masks = _read_masks(pairs, chosen, root, out_hw)
    k, binary_255 = classes_of(stats, num_classes)
    splits = {}
    for s in SPLITS:
        images = _load_split([pairs[s][i][0] for i in chosen[s]], root, s, resolved, out_hw).images
        splits[s] = SegSplit(images, finish_masks(masks[s], binary_255, out_hw))
    extra = {"native_sizes": [list(hw) for hw in sorted({it.size for it in every})[:10]], "image_modes": sorted({it.mode for it in every}),
             "source_sizes": {s: len(pairs[s]) for s in SPLITS}, **seg_extra(splits, k, binary_255)}
    return SegDataset(
        train=splits["train"], val=splits["val"], test=splits["test"], num_classes=k, channels=channels,
        image_size=out_hw, class_names=default_class_names(k), format="folder", preprocessing=resolved,
        path=root, sha256=sha256_tree(root), extra=extra,
    )
