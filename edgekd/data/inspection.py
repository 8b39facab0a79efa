"""What edgekd reads from a dataset, before any training: ``edgekd data inspect``.

:func:`inspect_dataset` loads the data exactly as ``compress`` would (same reader, preprocessing,
options, ``max_samples`` and seed) and returns, per split, the images per class, the image size
and channels, the value range before preprocessing (the 0-255 scale it starts from, and for DICOM
the stored and rescaled values) and after it (what the model is fed), and the patients when a
patient column is known; :func:`contact_sheet` draws images as the model sees them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import DataOptions, Preprocessing
from ._base import Dataset
from .lazy import chunks

SPLITS = ("train", "val", "test")
MAX_SHEET_CLASSES = 12  # rows per split on the contact sheet; more classes are summarised, not drawn


def _range(t: torch.Tensor) -> list[float] | None:
    return [float(t.min()), float(t.max())] if t.numel() else None


def _ranges(images, pre: Preprocessing) -> tuple[list[float] | None, list[float] | None]:
    """(range before, range after preprocessing) of a split's images, chunk by chunk (a lazy train split
    is never held whole); the same figures as over the whole tensor."""
    before, after = [], []
    for x in chunks(images):
        before.append(_range(_as_read(x, pre)))
        after.append(_range(x))

    def merged(parts: list) -> list[float] | None:
        parts = [p for p in parts if p is not None]
        return [min(p[0] for p in parts), max(p[1] for p in parts)] if parts else None

    return merged(before), merged(after)


def _as_read(images: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """The preprocessed tensor mapped back to the 0-255 scale preprocessing starts from (x * std + mean) * 255."""
    c = images.shape[1]
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, c, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(1, c, 1, 1)
    return (images * std + mean) * 255.0


def summarize(data: Dataset) -> dict:
    """The JSON-ready summary :func:`inspect_dataset` returns, from a loaded dataset."""
    pre = data.preprocessing
    extra = data.extra
    splits = {}
    for s in SPLITS:
        split = getattr(data, s)
        counts = np.bincount(split.labels.numpy(), minlength=data.num_classes).tolist()
        before, after = _ranges(split.images, pre)
        info = {
            "images": len(split),
            "class_counts": dict(zip(data.class_names, counts)),
            "patients": (extra.get("patients") or {}).get(s),
            "range_before": before,
            "range_after": after,
        }
        if "dicom_ranges" in extra:
            info["dicom_stored_range"] = extra["dicom_ranges"][s]["stored_range"]
            info["dicom_modality_range"] = extra["dicom_ranges"][s]["modality_range"]
        splits[s] = info
    out = {
        "path": str(data.path) if data.path else None,
        "format": data.format,
        "sha256": data.sha256,
        "num_classes": data.num_classes,
        "class_names": data.class_names,
        "channels": data.channels,
        "image_size": list(data.image_size),
        "native_sizes": extra.get("native_sizes"),
        "preprocessing": pre.to_dict(),
        "splits": splits,
    }
    for key in ("split_source", "split_by", "split_fractions", "patient_column", "dicom"):
        if key in extra:
            out[key] = extra[key]
    return out


def contact_sheet(data: Dataset, path: str | Path, per_class: int = 8) -> Path:
    """A PNG of up to ``per_class`` images per class and split, exactly as the model sees them.

    Each tile is the preprocessed tensor at the model's input size (nearest-neighbour, no
    smoothing), shown linearly from the value a 0 pixel becomes (black) to the value a 255 pixel
    becomes (white): no per-image contrast stretch, so a too-dark or inverted export shows as such.
    The first images of each class in the split's order are drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pre = data.preprocessing
    names = data.class_names[:MAX_SHEET_CLASSES]
    rows = [(s, c) for s in SPLITS for c in range(len(names))]
    cols = max(1, int(per_class))
    h, w = data.image_size
    tile = 1.3
    fig, axes = plt.subplots(len(rows), cols, figsize=(cols * tile * max(1.0, w / h), len(rows) * (tile + 0.25)),
                             squeeze=False)
    for r, (s, c) in enumerate(rows):
        split = getattr(data, s)
        idx = torch.nonzero(split.labels == c).flatten()[:cols].tolist()
        for k in range(cols):
            ax = axes[r][k]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if k == 0:
                ax.set_ylabel(f"{s}\n{names[c]}", fontsize=7, rotation=0, ha="right", va="center")
            if k >= len(idx):
                continue
            x = split.images[idx[k]]
            shown = ((_as_read(x[None], pre)[0] / 255.0).clamp(0, 1)).permute(1, 2, 0).numpy()
            if shown.shape[2] == 1:
                ax.imshow(shown[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.imshow(shown, interpolation="nearest")
            ax.set_title(f"{names[c]} #{idx[k]}", fontsize=6, pad=2)
    extra = f"; first {MAX_SHEET_CLASSES} of {data.num_classes} classes" if data.num_classes > MAX_SHEET_CLASSES else ""
    fig.suptitle(f"{data.format} {data.path.name if data.path else ''}: model input {h}×{w}×{data.channels}, "
                 f"(x/255 − mean)/std with mean {list(pre.mean)} std {list(pre.std)}; black = pixel 0, white = 255{extra}",
                 fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def inspect_dataset(path: str | Path | None, pre: Preprocessing, *, options: DataOptions | None = None,
                    max_samples: int | None = None, seed: int = 0, sheet: str | Path | None = None,
                    per_class: int = 8) -> dict:
    """Load ``path`` as ``compress`` would and summarise it; with ``sheet``, also write the contact sheet there."""
    from . import load_dataset

    data = load_dataset(path, pre, max_samples=max_samples, seed=seed, options=options)
    summary = summarize(data)
    summary["contact_sheet"] = str(contact_sheet(data, sheet, per_class)) if sheet is not None else None
    return summary
