"""What every runtime runner looks like, and the helpers they share.

A runner maps a float32 N×C×H×W batch (already preprocessed) to float32 N×K logits. Runners
are not thread-safe: each holds one session / infer request that it reuses across calls, which
keeps the per-call overhead low at batch 1.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

import numpy as np

from .._progress import track
from ..errors import InputError, LoweringError, did_you_mean

PRECISIONS = ("fp32", "bf16", "fp16", "int8")


@runtime_checkable
class Runner(Protocol):
    """A model loaded into one runtime, ready to run batches."""

    backend: str  # runtime name, one of edgekd.lower.RUNTIMES
    precision: str  # arithmetic the model runs in: "fp32", "bf16", "fp16" or "int8"
    path: Path | None  # the model file it runs (None for an in-memory torch module)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """float32 N×C×H×W -> float32 N×K logits."""
        ...


def check_precision(precision: str, allowed: tuple[str, ...], backend: str) -> str:
    """``precision`` when ``backend`` supports it, else an InputError naming the choices."""
    if precision not in allowed:
        raise InputError(
            f"precision '{precision}' is not supported by the {backend} runner"
            f"{did_you_mean(precision, allowed)}; use one of {', '.join(allowed)}"
        )
    return precision


def as_batch(x: np.ndarray) -> np.ndarray:
    """A contiguous float32 N×C×H×W array (no copy when it already is one)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise InputError(f"runners take N×C×H×W float32 batches, got an array of shape {tuple(x.shape)}")
    return x


def check_threads(threads: int) -> int:
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise InputError(f"threads must be a positive integer, got {threads!r}")
    return threads


def check_model_file(path: str | os.PathLike, suffixes: tuple[str, ...], backend: str) -> Path:
    """The path of an existing model file with one of ``suffixes``, else an InputError."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise InputError(f"{backend} runs {' or '.join(suffixes)} files, got '{path}'")
    if not path.is_file():
        raise InputError(f"model file '{path}' does not exist; export it first")
    return path


# images per call when the caller names no batch size: 64, or fewer so a call holds at most this many pixels (16
# images at 128×128). Eager torch on the CPU slows down when a batch's activations leave the caches: a ResNet-34
# U-Net ran 41 ms an image 64 at a time and 33 ms 16 at a time, an efficientnet_b0 U-Net 200 images in 3.3 s and 1.4 s
# (2 cores, measured); OpenVINO was the same at 1, 8, 16 and 64 images a call
PREDICT_IMAGES, PREDICT_PIXELS = 64, 1 << 18


def images_per_call(shape: tuple[int, ...]) -> int:
    """Images per inference call for N×C×H×W inputs of ``shape``: PREDICT_IMAGES, or fewer (PREDICT_PIXELS)."""
    return max(1, min(PREDICT_IMAGES, PREDICT_PIXELS // max(1, int(np.prod(shape[2:])))))


def predict_batched(runner: Runner, images: np.ndarray, batch_size: int | None = None, *,
                    desc: str = "predict") -> np.ndarray:
    """Logits of ``runner`` on every image, run ``batch_size`` images at a time (float32 N×K, or N×K×H×W
    for a segmentation model: its output keeps the input's H×W). ``batch_size`` None: see ``PREDICT_PIXELS``."""
    images = as_batch(images)
    if len(images) == 0:
        raise InputError("predict_batched got no images")
    if batch_size is None:
        batch_size = images_per_call(images.shape)
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    starts = range(0, len(images), batch_size)
    chunks = []
    for start in track(starts, f"{desc} ({runner.backend})", total=len(starts)):
        batch = images[start:start + batch_size]
        out = np.asarray(runner(batch))
        if out.shape[:1] != (len(batch),) or (out.ndim != 2 and (out.ndim != 4 or out.shape[2:] != batch.shape[2:])):
            raise LoweringError(
                f"{runner.backend} runner returned shape {tuple(out.shape)} for a batch of {len(batch)}; "
                f"the model must output N×K logits (N×K×H×W for segmentation)"
            )
        chunks.append(out.astype(np.float32, copy=False))
    return np.concatenate(chunks, axis=0)


def temp_sibling(path: Path, suffix: str) -> Path:
    """A hidden, unique name in ``path``'s folder (so a final ``os.replace`` is atomic)."""
    return path.parent / f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{suffix}"


@contextlib.contextmanager
def cleanup_on_error(*paths: Path) -> Iterator[None]:
    """Remove ``paths`` if the block fails, so a failed export leaves no file behind."""
    try:
        yield
    except BaseException:
        for p in paths:
            p.unlink(missing_ok=True)
        raise


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception message, for one-line errors."""
    for line in str(exc).splitlines():
        if line.strip():
            return f"{type(exc).__name__}: {line.strip()}"[:300]
    return type(exc).__name__
