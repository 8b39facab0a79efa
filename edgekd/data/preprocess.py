"""Raw pixels -> the float tensor every model sees: ``x/255 -> resize -> (x - mean)/std``.

The same three steps run on the device, so they are kept deliberately simple and are recorded
in the report (:meth:`edgekd.config.Preprocessing.to_dict`). Resizing is bilinear with
antialiasing (``torch.nn.functional.interpolate``) and happens only when ``image_size`` is set
and differs from the data's size. Work is done in chunks so that thousands of images resized to
224×224 never need more than one chunk of temporary memory besides the output.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Preprocessing
from ..errors import DataError

MIN_SIZE = 8
MAX_SIZE = 1024
_CHUNK_PIXELS = 1 << 24  # input + output pixels handled per chunk (~64 MB of float32 each)


def check_image_size(image_size: int | None) -> None:
    """Reject a requested size outside [MIN_SIZE, MAX_SIZE] (a typo like 2240, or 0)."""
    if image_size is None:
        return
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise DataError(
            f"image size must be an integer, got {image_size!r}: pass --image-size N with N in [{MIN_SIZE}, {MAX_SIZE}]"
        )
    if not MIN_SIZE <= int(image_size) <= MAX_SIZE:
        raise DataError(
            f"image size {image_size} is outside [{MIN_SIZE}, {MAX_SIZE}]: pass --image-size N with N in that range"
        )


def output_size(native_hw: tuple[int, int], pre: Preprocessing) -> tuple[int, int]:
    """(H, W) after preprocessing; a DataError when that exceeds MAX_SIZE×MAX_SIZE."""
    check_image_size(pre.image_size)
    hw = (int(pre.image_size), int(pre.image_size)) if pre.image_size is not None else tuple(native_hw)
    if max(hw) > MAX_SIZE:
        raise DataError(
            f"images are {hw[0]}×{hw[1]} after preprocessing, larger than {MAX_SIZE}×{MAX_SIZE}: "
            f"pass --image-size N (N <= {MAX_SIZE}, e.g. 224) to downscale them"
        )
    return hw  # type: ignore[return-value]


def _expand(name: str, values: tuple[float, ...] | list[float] | float, channels: int) -> tuple[float, ...]:
    vals = (values,) if isinstance(values, (int, float)) else tuple(values)
    if len(vals) == 1:
        vals = vals * channels
    if len(vals) != channels:
        raise DataError(
            f"preprocessing {name} has {len(vals)} values but the images have {channels} channel(s): "
            f"give 1 value (broadcast) or {channels}"
        )
    out = tuple(float(v) for v in vals)
    if not all(np.isfinite(out)):
        raise DataError(f"preprocessing {name} {out} contains NaN/Inf: give finite numbers")
    return out


def resolve(pre: Preprocessing, channels: int) -> Preprocessing:
    """A copy of ``pre`` with ``channels`` filled in and mean/std expanded to one value per channel.

    A ``pre.channels`` that is already set must match the data (a stale config would otherwise
    feed a 3-channel model grayscale images, or the reverse).
    """
    if channels not in (1, 3):
        raise DataError(f"images have {channels} channels; edgekd takes grayscale (1) or RGB (3) images")
    if pre.channels is not None and pre.channels != channels:
        raise DataError(
            f"preprocessing says {pre.channels} channel(s) but the data has {channels}: "
            "leave channels unset (the loader fills it in) or use matching data"
        )
    check_image_size(pre.image_size)
    mean = _expand("mean", pre.mean, channels)
    std = _expand("std", pre.std, channels)
    if any(s <= 0 for s in std):
        raise DataError(f"preprocessing std {std} must be > 0 for every channel: e.g. --std 0.5")
    return replace(pre, channels=channels, mean=mean, std=std)


def image_layout(images: np.ndarray) -> tuple[int, int, int]:
    """(channels, H, W) of an N×H×W or N×H×W×{1,3} array (H, W >= 1), or a DataError naming the shape."""
    if images.ndim in (3, 4) and min(images.shape[1:3]) >= 1:
        if images.ndim == 3:
            return 1, int(images.shape[1]), int(images.shape[2])
        if images.shape[3] in (1, 3):
            return int(images.shape[3]), int(images.shape[1]), int(images.shape[2])
    raise DataError(
        f"images have shape {tuple(images.shape)}: expected N×H×W (grayscale) or N×H×W×3 (RGB) with H, W >= 1"
    )


def _check_values(chunk: np.ndarray) -> None:
    """Non-uint8 pixels must be finite numbers in [0, 255] (x/255 must land in [0, 1])."""
    if chunk.dtype == np.uint8 or chunk.size == 0:
        return
    if not (np.issubdtype(chunk.dtype, np.integer) or np.issubdtype(chunk.dtype, np.floating)):
        raise DataError(f"image pixels have dtype {chunk.dtype}: expected uint8 (or numbers in [0, 255])")
    if np.issubdtype(chunk.dtype, np.floating) and not np.isfinite(chunk).all():
        raise DataError("images contain NaN/Inf pixels: clean the data (pixels must be numbers in [0, 255])")
    lo, hi = chunk.min(), chunk.max()
    if lo < 0 or hi > 255:
        raise DataError(
            f"image pixels range over [{lo}, {hi}]: edgekd expects 0-255 (8-bit); rescale them, e.g. to uint8"
        )


def preprocess(images: np.ndarray, pre: Preprocessing) -> torch.Tensor:
    """float32 N×C×H×W from uint8 (or float in [0, 255]) N×H×W or N×H×W×{1,3} pixels.

    ``pre`` need not be resolved; mean/std are expanded for the images' channel count here.
    """
    images = np.asarray(images)
    channels, h, w = image_layout(images)
    pre = resolve(pre, channels)
    out_h, out_w = output_size((h, w), pre)
    n = int(images.shape[0])
    out = torch.empty((n, channels, out_h, out_w), dtype=torch.float32)
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, channels, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(1, channels, 1, 1)
    step = max(1, _CHUNK_PIXELS // (channels * max(h * w, out_h * out_w)))
    for start in range(0, n, step):
        raw = images[start : start + step]
        _check_values(raw)
        # one float copy of the chunk, scaled and normalised in place: a streamed split is preprocessed chunk
        # by chunk, and each temporary the size of a chunk stays in the process's heap once freed
        x = torch.from_numpy(np.array(raw, dtype=np.float32, copy=True))
        x = x.unsqueeze(1) if images.ndim == 3 else x.permute(0, 3, 1, 2)
        x.div_(255.0)
        if (out_h, out_w) != (h, w):
            x = F.interpolate(x, size=(out_h, out_w), mode="bilinear", antialias=True, align_corners=False)
        out[start : start + step] = x.sub_(mean).div_(std)
    return out


def check_max_samples(max_samples: int | None) -> None:
    if max_samples is None:
        return
    if isinstance(max_samples, bool) or not isinstance(max_samples, (int, np.integer)) or max_samples < 1:
        raise DataError(f"max_samples must be a positive integer or None, got {max_samples!r}: e.g. --max-samples 200")


def subset_indices(n_total: int, max_samples: int | None, seed: int = 0) -> np.ndarray:
    """The rows :meth:`Split.subset` keeps, computed before decoding/preprocessing (cheaper).

    Delegates to ``Split.subset`` on an index-only split so both always pick the same rows.
    """
    from ._base import Split

    index = Split(images=torch.empty((n_total, 0)), labels=torch.arange(n_total))
    return index.subset(max_samples, seed).labels.numpy()
