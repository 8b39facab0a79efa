"""Segmentation datasets stored as one ``.npz`` file.

Arrays ``train_images``, ``train_masks``, ``val_images``, ``val_masks``, ``test_images``,
``test_masks``: images N×H×W (grayscale) or N×H×W×3 (RGB), 0-255 (uint8 best), as for
classification (:mod:`.npz`); masks N×H×W (or N×H×W×1) integers, mask i the size of image i,
holding class indices 0..K−1 or a binary 0/255 or 0/1 (rules: :mod:`._seg_base`). An optional
1-D string array ``class_names`` names the classes (and fixes K). Opened with
``allow_pickle=False`` and checked from the ``.npy`` headers before anything is decompressed,
with the same limits as the classification reader.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import sha256_file
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
    seg_extra,
)
from .npz import (
    _READ_ERRORS,
    _check_headers,
    _check_images,
    _class_names,
    _headers,
    _open_archive,
)
from .preprocess import (
    check_max_samples,
    output_size,
    preprocess,
    resolve,
    subset_indices,
)

SPLITS = ("train", "val", "test")
REQUIRED_KEYS = tuple(f"{s}_{kind}" for s in SPLITS for kind in ("images", "masks"))
LAYOUT = ("train_images/train_masks, val_images/val_masks, test_images/test_masks "
          "(images N×H×W[×3] uint8, masks N×H×W integer class indices)")
_SAVEZ = ("save the splits with numpy.savez(path, train_images=..., train_masks=..., val_images=..., "
          "val_masks=..., test_images=..., test_masks=...)")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every wanted array, or a DataError for a missing, corrupt, incomplete or oversized file."""
    archive = _open_archive(path, _SAVEZ)
    with archive:
        missing = [k for k in REQUIRED_KEYS if k not in archive.files]
        if missing:
            has = ", ".join(shown(k) for k in archive.files[:20]) or "nothing"
            raise DataError(f"{path.name} is missing {', '.join(missing)} (it has: {has}); "
                            f"a segmentation .npz holds {LAYOUT}")
        wanted = list(REQUIRED_KEYS) + (["class_names"] if "class_names" in archive.files else [])
        try:
            headers = _headers(archive)
            _check_headers(path.name, headers, wanted)
            return {key: archive[key] for key in wanted}
        except _READ_ERRORS as exc:
            raise DataError(f"{path.name} is not a readable .npz archive (corrupt or truncated? {shown(str(exc))}): "
                            "re-save it with numpy.savez") from exc


def _check_masks(name: str, split: str, masks: np.ndarray, images: np.ndarray) -> np.ndarray:
    """One split's masks as N×H×W integers, one per image and each its image's size."""
    key = f"{split}_masks"
    if masks.ndim == 4 and masks.shape[3] == 1:
        masks = masks[..., 0]
    if masks.ndim != 3:
        raise DataError(f"{name}: '{key}' has shape {tuple(masks.shape)}: expected N×H×W class-index masks "
                        "(one-hot or multi-channel masks are not supported: store argmax)")
    if len(masks) != len(images):
        raise DataError(f"{name}: '{key}' has {len(masks)} masks but '{split}_images' has {len(images)} images: "
                        "they must match one to one")
    if masks.shape[1:3] != images.shape[1:3]:
        raise DataError(f"{name}: '{key}' masks are {masks.shape[1]}×{masks.shape[2]} but '{split}_images' are "
                        f"{images.shape[1]}×{images.shape[2]}: each mask must be the size of its image")
    if masks.dtype == np.bool_:
        return masks.astype(np.uint8)
    if not np.issubdtype(masks.dtype, np.integer):
        raise DataError(f"{name}: '{key}' has dtype {masks.dtype}: store masks as integers (uint8 class indices, "
                        "or 0/255 for a binary mask)")
    return masks


def load_seg_npz(path: str | Path, pre: Preprocessing, *, num_classes: int | None = None,
                 max_samples: int | None = None, seed: int = 0) -> SegDataset:
    """Load, validate and preprocess a segmentation ``.npz`` into a :class:`SegDataset`.

    K is ``num_classes``, else the number of ``class_names``, else inferred from the masks of
    every split (before ``max_samples``, which caps each split with the rows
    :meth:`SegSplit.subset` would pick). Images are preprocessed as for classification; masks
    are resized with nearest-neighbour to the same size and returned as int64.
    """
    path = Path(path)
    check_max_samples(max_samples)
    check_num_classes(num_classes)
    arrays = _read_arrays(path)
    name = path.name
    layouts, masks = {}, {}
    for s in SPLITS:
        layouts[s] = _check_images(name, f"{s}_images", arrays[f"{s}_images"])
        masks[s] = _check_masks(name, s, arrays[f"{s}_masks"], arrays[f"{s}_images"])
    channels = {s: layouts[s][0] for s in SPLITS}
    if len(set(channels.values())) > 1:
        raise DataError(f"{name}: splits mix grayscale and RGB images (channels per split: {channels}): use one kind")
    sizes = {layouts[s][1:] for s in SPLITS}
    if len(sizes) > 1 and pre.image_size is None:
        raise DataError(f"{name}: splits have different image sizes {sorted(sizes)}: "
                        "pass --image-size N to resize them all")
    names = _class_names(name, arrays.get("class_names"))
    if names is not None and num_classes is not None and len(names) != num_classes:
        raise DataError(f"{name}: 'class_names' has {len(names)} names but num_classes is {num_classes}: "
                        "make them agree, or leave num_classes unset")
    if names is not None:
        check_num_classes(len(names))

    starts = np.cumsum([0] + [len(masks[s]) for s in SPLITS])

    def where(row: int) -> str:
        i = int(np.searchsorted(starts, row, side="right")) - 1
        return f"{name}: '{SPLITS[i]}_masks' mask {row - starts[i]}"

    parts = [mask_stats(masks[s]) for s in SPLITS]
    stats = MaskStats(*(np.concatenate([p[j] for p in parts]) for j in range(4)), name=where)
    if num_classes is None and names is not None:
        k, binary_255 = classes_of(stats, len(names), "'class_names' count")
    else:
        k, binary_255 = classes_of(stats, num_classes)

    resolved = resolve(pre, channels["train"])
    out_hw = output_size(layouts["train"][1:], resolved)
    splits = {}
    for s in SPLITS:
        idx = subset_indices(len(masks[s]), max_samples, seed)
        images = preprocess(arrays[f"{s}_images"][idx], resolved)
        splits[s] = SegSplit(images, finish_masks(masks[s][idx], binary_255, out_hw))
    extra = {"native_size": list(layouts["train"][1:]), "source_sizes": {s: int(len(masks[s])) for s in SPLITS},
             **seg_extra(splits, k, binary_255)}
    return SegDataset(
        train=splits["train"], val=splits["val"], test=splits["test"], num_classes=k, channels=resolved.channels,
        image_size=out_hw, class_names=names or default_class_names(k), format="npz", preprocessing=resolved,
        path=path, sha256=sha256_file(path), extra=extra,
    )
