"""SYNTHETIC demo data: procedurally generated chest-X-ray-like images, not real patients.

``edgekd compress`` with no ``--data`` runs on these so that the whole pipeline can be tried
without downloading anything. The images are drawn from a simple parametric model of a frontal
chest radiograph, vectorised over the batch with numpy:

* a bright body (soft tissue) on a dark background, with random patient size and position;
* two darker lung fields, a bright spine/mediastinum band and a heart shadow;
* rib arcs crossing the lungs;
* smooth low-frequency texture (vessels, breast/soft-tissue overlap) in every image;
* random exposure (gain, offset, gamma), blur and pixel noise.

Class 1 ("pneumonia") adds one to four patchy consolidations (soft bright blobs of random size,
position and strength) inside a lung field; class 0 ("normal") does not. Some positives are
deliberately faint and the normals carry opacity-like texture too, so the task is learnable but
not trivial (a small CNN reaches an AUC around 0.9-0.98, not 1.0). Labels: 0 normal, 1 pneumonia.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from ..config import Preprocessing
from ..errors import DataError
from ._base import Dataset, Split
from .preprocess import MAX_SIZE, MIN_SIZE, check_max_samples, output_size, preprocess, resolve

CLASS_NAMES = ["normal", "pneumonia"]
_MAX_BLOBS = 4
_SQRT2 = 2**0.5  # a Python float: keeps float32 arrays float32 (a numpy float64 would promote them)


def _u(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    """n uniform draws shaped (n, 1, 1) so they broadcast over an N×H×W batch."""
    return rng.uniform(lo, hi, n).astype(np.float32)[:, None, None]


def _smooth_field(rng: np.random.Generator, n: int, size: int, cells: int) -> np.ndarray:
    """Smooth random N×size×size field in about [-1, 1]: a cells×cells grid, bilinearly upsampled."""
    coarse = rng.standard_normal((n, cells, cells)).astype(np.float32)
    pos = np.linspace(0, cells - 1, size, dtype=np.float32)
    lo = np.minimum(np.floor(pos).astype(int), cells - 2)
    frac = pos - lo
    up = np.zeros((size, cells), dtype=np.float32)  # row i mixes coarse cells lo[i] and lo[i] + 1
    up[np.arange(size), lo] = 1 - frac
    up[np.arange(size), lo + 1] = frac
    # up @ coarse @ up.T for every image, as two large 2-D products (batched matmul is far slower)
    half = (coarse.reshape(n * cells, cells) @ up.T).reshape(n, cells, size)
    full = half.transpose(0, 2, 1).reshape(n * size, cells) @ up.T
    return np.ascontiguousarray(full.reshape(n, size, size).transpose(0, 2, 1))


def _bump(z: np.ndarray) -> np.ndarray:
    """exp(-z²), flushed to 0 beyond |z| = 7 so no denormal floats (100× slower maths) appear."""
    return np.exp(-np.minimum(z * z, 49.0))


def _blur(images: np.ndarray, sigma_px: float) -> np.ndarray:
    """Separable Gaussian blur of an N×H×W batch (square images) as two large matrix products."""
    n, size = images.shape[0], images.shape[-1]
    d = np.arange(size, dtype=np.float32)
    g = _bump((d[:, None] - d[None, :]) / (_SQRT2 * sigma_px))
    g /= g.sum(axis=1, keepdims=True)
    rows = (images.reshape(n * size, size) @ g.T).reshape(n, size, size)  # g symmetric: blur along W
    cols = rows.transpose(0, 2, 1).reshape(n * size, size) @ g.T  # then along H
    return np.ascontiguousarray(cols.reshape(n, size, size).transpose(0, 2, 1))


def _soft_ellipse(x: np.ndarray, y: np.ndarray, cx, cy, rx, ry, edge: float) -> np.ndarray:
    """1 inside the ellipse, 0 outside, with a soft edge of width ~edge (in normalised units)."""
    r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return 0.5 - 0.5 * np.tanh((r - 1.0) / (2 * edge))


def _anatomy(rng: np.random.Generator, n: int, size: int, x: np.ndarray, y: np.ndarray):
    """Attenuation maps of body, lungs (both fields), spine, heart and ribs, and the lung geometry."""
    scale = _u(rng, 0.82, 1.08, n)  # patient size relative to the detector
    cx, cy = _u(rng, -0.06, 0.06, n), _u(rng, -0.05, 0.07, n)
    body = _soft_ellipse(x, y, cx, cy + 0.1, 0.92 * scale, 1.15 * scale, 0.05)
    lung_rx = 0.27 * scale * _u(rng, 0.9, 1.1, n)
    lung_ry = 0.52 * scale * _u(rng, 0.9, 1.1, n)
    lung_cy = cy - 0.05 * scale
    taper = 0.75 + 0.25 * np.clip((y - lung_cy) / lung_ry, -1, 1)  # lungs narrower at the apex
    sides = [cx - 0.36 * scale, cx + 0.36 * scale]
    lungs = [_soft_ellipse(x, y, sx, lung_cy, lung_rx * taper, lung_ry, 0.08) for sx in sides]
    spine = _bump((x - cx) / (0.06 * scale)) + 0.5 * _bump((x - cx) / (0.16 * scale))
    heart = _soft_ellipse(x, y, cx + 0.13 * scale, lung_cy + 0.3 * scale, 0.25 * scale, 0.2 * scale, 0.1)
    # Rib arcs: one periodic band in t, the height above a parabola that drops away from the spine.
    t = (y - lung_cy - 0.55 * (x - cx) ** 2 / scale) / (0.17 * scale * _u(rng, 0.9, 1.1, n))
    ribs = _bump((t - np.round(t)) / 0.2)
    geometry = (np.stack(sides, axis=1), lung_cy, lung_rx, lung_ry)
    return body, lungs, spine * body, heart, ribs, geometry


def _consolidations(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, lungs: list[np.ndarray], geometry
) -> np.ndarray:
    """Patchy opacities inside a lung field: 1-4 soft blobs per image with a random strength.

    ``lungs`` and ``geometry`` cover only the images that get opacities (the positives).
    """
    sides, lung_cy, lung_rx, lung_ry = geometry
    n, size = lungs[0].shape[0], x.shape[-1]
    count = rng.integers(1, _MAX_BLOBS + 1, n)
    out = np.zeros((n, size, size), dtype=np.float32)
    for b in range(_MAX_BLOBS):
        side = rng.integers(0, 2, n)
        r, theta = np.sqrt(rng.uniform(0, 0.45, n)), rng.uniform(0, 2 * np.pi, n)
        bx = sides[np.arange(n), side] + (r * np.cos(theta)).astype(np.float32)[:, None, None] * lung_rx
        by = lung_cy + (r * np.sin(theta)).astype(np.float32)[:, None, None] * lung_ry
        sigma = _u(rng, 0.08, 0.2, n)
        blob = _bump((x - bx) / (_SQRT2 * sigma)) * _bump((y - by) / (_SQRT2 * sigma))  # separable
        lung = np.where(side[:, None, None] == 0, lungs[0], lungs[1])
        out += blob * lung * (b < count)[:, None, None]
    patchy = 0.6 + 0.4 * np.tanh(_smooth_field(rng, n, size, 10))  # mottled, not a clean disc
    # Strength: mostly clear (a demo teacher must learn it in a few epochs), ~6 % faint cases that are hard to see.
    strength = np.where(rng.uniform(size=n) < 0.06, rng.uniform(0.2, 0.3, n), rng.uniform(0.45, 0.9, n))
    return np.clip(out, 0, 1.5) * patchy * strength.astype(np.float32)[:, None, None]


def make_synthetic_xrays(n: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """SYNTHETIC chest-X-ray-like images: (uint8 N×size×size, int64 labels N; 1 = "pneumonia").

    Classes are balanced (n//2 or n//2 + 1 of each, shuffled). Deterministic for a given
    (n, size, seed).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DataError(f"number of synthetic images must be a positive integer, got {n!r}")
    if not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise DataError(f"synthetic image size {size} is outside [{MIN_SIZE}, {MAX_SIZE}]: pick e.g. 64")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2).astype(np.int64)
    grid = np.linspace(-1, 1, size, dtype=np.float32)
    x, y = grid[None, None, :], grid[None, :, None]
    body, lungs, spine, heart, ribs, geometry = _anatomy(rng, n, size, x, y)
    lung = np.maximum(lungs[0], lungs[1])
    texture = _smooth_field(rng, n, size, 12) * _u(rng, 0.02, 0.06, n)  # vessels/overlap in every image
    lung_dark = _u(rng, 0.28, 0.4, n) * lung * (1 - 0.8 * heart)  # the heart shadow covers lung
    img = 0.55 * body - lung_dark + 0.15 * spine + 0.05 * heart * body
    img += _u(rng, 0.06, 0.12, n) * ribs * lung + texture * lung
    pos = labels == 1
    sides, lung_cy, lung_rx, lung_ry = geometry
    img[pos] += _consolidations(
        rng, x, y, [lungs[0][pos], lungs[1][pos]], (sides[pos], lung_cy[pos], lung_rx[pos], lung_ry[pos])
    )
    img = _blur(img.astype(np.float32), sigma_px=max(0.6, size / 80))
    gain, offset = _u(rng, 0.8, 1.25, n), _u(rng, 0.02, 0.12, n)
    img = np.clip(img * gain + offset, 0, 1) ** _u(rng, 0.8, 1.25, n)
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * _u(rng, 0.01, 0.04, n)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8), labels


def _split_seed(seed: int, index: int) -> int:
    """Independent seeds for train/val/test derived from one user seed."""
    return int(np.random.SeedSequence([int(seed), index]).generate_state(1)[0])


def load_synthetic(
    pre: Preprocessing,
    *,
    n_train: int = 2000,
    n_val: int = 400,
    n_test: int = 400,
    size: int = 64,
    seed: int = 0,
    max_samples: int | None = None,
) -> Dataset:
    """The embedded SYNTHETIC demo dataset (format "synthetic", labels normal/pneumonia).

    ``max_samples`` caps each split by generating fewer images (cheaper than subsetting).
    ``sha256`` hashes the generated arrays so a report still identifies the exact data.
    """
    check_max_samples(max_samples)
    resolved = resolve(pre, 1)
    out_hw = output_size((size, size), resolved)
    digest = hashlib.sha256()
    splits = {}
    for i, (name, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        n = n if max_samples is None else min(n, max_samples)
        images, labels = make_synthetic_xrays(n, size=size, seed=_split_seed(seed, i))
        digest.update(images.tobytes())
        digest.update(labels.tobytes())
        splits[name] = Split(preprocess(images, resolved), torch.from_numpy(labels))
    extra = {
        "synthetic": True,
        "note": "procedurally generated, not real patients",
        "generator": "edgekd.data.synthetic.make_synthetic_xrays",
        "native_size": [size, size],
        "seed": seed,
        "class_counts": {s: np.bincount(splits[s].labels.numpy(), minlength=2).tolist() for s in splits},
    }
    return Dataset(
        train=splits["train"], val=splits["val"], test=splits["test"], num_classes=2, channels=1,
        image_size=out_hw, class_names=list(CLASS_NAMES), format="synthetic", preprocessing=resolved,
        path=None, sha256=digest.hexdigest(), extra=extra,
    )
