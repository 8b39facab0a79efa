"""Sane upper bounds on what edgekd reads, so a wrong or hostile file fails fast with a clear line.

Each limit has a generous default and an environment variable to raise (or lower) it:

=========================  ==================  ===================================================
variable                   default             what it bounds
=========================  ==================  ===================================================
``EDGEKD_MAX_MODEL_MB``    2048 (2 GiB)        a teacher file or weights file on disk
``EDGEKD_MAX_DATA_MB``     16384 (16 GiB)      the arrays of an ``.npz`` once decompressed
``EDGEKD_MAX_IMAGE_SIDE``  8192                the width or height of one stored image (pixels)
``EDGEKD_MAX_IMAGES``      1000000             images in a dataset, all splits together
=========================  ==================  ===================================================

The npz and image limits are checked from headers, before any pixel is decompressed, so a
"zip bomb" or a 100 000 × 100 000 PNG is refused without using the memory it asks for.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

MB = 1 << 20


@dataclass(frozen=True)
class Limits:
    max_model_bytes: int = 2048 * MB  # teacher / weights file size
    max_data_bytes: int = 16384 * MB  # decompressed .npz arrays, all together
    max_image_side: int = 8192  # width or height of one stored image
    max_images: int = 1_000_000  # images in a dataset, all splits


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"environment variable {name}={raw!r} must be a positive integer (default {default}): "
                         f"fix or unset it")
    return value


def limits() -> Limits:
    """The limits in force now (read from the environment on every call, so tests can change them)."""
    d = Limits()
    return Limits(
        max_model_bytes=_env_int("EDGEKD_MAX_MODEL_MB", d.max_model_bytes // MB) * MB,
        max_data_bytes=_env_int("EDGEKD_MAX_DATA_MB", d.max_data_bytes // MB) * MB,
        max_image_side=_env_int("EDGEKD_MAX_IMAGE_SIDE", d.max_image_side),
        max_images=_env_int("EDGEKD_MAX_IMAGES", d.max_images),
    )


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", MB), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def check_model_size(path: Path, what: str, error: type[InputError] = InputError) -> None:
    """Refuse a model file larger than ``EDGEKD_MAX_MODEL_MB`` before reading it."""
    limit = limits().max_model_bytes
    size = Path(path).stat().st_size
    if size > limit:
        raise error(f"{what} {path} is {human_bytes(size)}, over the {human_bytes(limit)} limit for model files: "
                    f"check it is the right file, or raise EDGEKD_MAX_MODEL_MB")
