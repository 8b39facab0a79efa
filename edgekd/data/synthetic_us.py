"""SYNTHETIC ultrasound-like images with lesion masks: procedurally generated, not real patients.

A segmentation demo and test set that needs no download. Each B-mode-like image is drawn from
a simple parametric model, vectorised over the batch with numpy:

* a field of view: a fan-shaped sector (curved/phased probe, ~3/4 of images, random apex and
  opening angle) or a rectangle (linear probe); black outside;
* tissue: a smooth echogenicity texture, undulating layers and a bright fascia line near the
  skin, sometimes a dark tube (a vessel, with faint walls) as a lesion look-alike;
* a lesion (in ``lesion_fraction`` of the images): a dark, roughly elliptical region with an
  irregular outline (random size, aspect, rotation, position, contrast), a bright rim of random
  thickness and strength that may be partial, and posterior enhancement or shadowing below it;
* zero to two bright specular structures (calcification/bone-like) casting acoustic shadows;
* depth-dependent attenuation with partial time-gain compensation;
* multiplicative Rayleigh speckle (the envelope of a smoothed complex Gaussian field, grains
  longer laterally than axially), log compression, random gain, a little electronic noise.

The mask is the lesion (binary: 0 background, 1 lesion, K = 2), clipped to the field of view;
images without a lesion have an empty mask. Shadows, vessels and faint lesions make the task
learnable but not trivial (a dark-pixel threshold does badly). Default 128×128 grayscale uint8.
"""
from __future__ import annotations

import hashlib

import numpy as np

from ..config import Preprocessing
from ..errors import DataError
from ._seg_base import SegDataset, SegSplit, finish_masks, seg_extra
from .preprocess import (
    MAX_SIZE,
    MIN_SIZE,
    check_max_samples,
    output_size,
    preprocess,
    resolve,
)
from .synthetic import _bump, _smooth_field, _split_seed, _u

CLASS_NAMES = ["background", "lesion"]
_CHUNK = 64  # images generated together (bounds the temporaries to a few tens of MB)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(0.5 * z)


def _blur(images: np.ndarray, sigma_y: np.ndarray, sigma_x: np.ndarray) -> np.ndarray:
    """Anisotropic Gaussian blur of N×S×S images (one sigma pair per image, in pixels)."""
    d = np.arange(images.shape[-1], dtype=np.float32)
    diff = (d[:, None] - d[None, :])[None]

    def kernel(sigma: np.ndarray) -> np.ndarray:
        g = _bump(diff / (np.float32(2**0.5) * sigma.astype(np.float32).reshape(-1, 1, 1)))
        return g / g.sum(axis=2, keepdims=True)

    rows = images @ kernel(sigma_x).transpose(0, 2, 1)  # along W
    return kernel(sigma_y) @ rows  # along H


def _geometry(rng: np.random.Generator, n: int, x: np.ndarray, y: np.ndarray):
    """Ray coordinates (u: lateral in [-1, 1] inside the view, r: depth) and the field of view."""
    sector = rng.uniform(size=n) < 0.75
    apex, theta = _u(rng, 0.15, 0.5, n), _u(rng, 0.4, 0.7, n)
    half_width, depth = _u(rng, 0.36, 0.48, n), _u(rng, 0.85, 1.0, n)
    s = sector[:, None, None]
    u = np.where(s, np.arctan2(x, y + apex) / theta, x / half_width)
    r = np.where(s, np.hypot(x, y + apex) - apex, y)
    fov = (np.abs(u) <= 1) & (r <= depth) & (r >= 0)
    soft = _sigmoid((1 - np.abs(u)) * 60) * _sigmoid((depth - r) * 150)

    def to_xy(uc: np.ndarray, rc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ang = uc * theta
        xs = np.where(s, (rc + apex) * np.sin(ang), uc * half_width)
        return xs, np.where(s, (rc + apex) * np.cos(ang) - apex, rc)

    lateral = np.where(s, theta * (r + apex), half_width)  # length of one unit of u at depth r
    return u.astype(np.float32), r.astype(np.float32), fov, soft.astype(np.float32), to_xy, lateral, depth


def _tissue(rng: np.random.Generator, n: int, size: int, r, x, y) -> np.ndarray:
    """Echogenicity of normal tissue: smooth texture, layers, a fascia line, sometimes a vessel."""
    e = 0.55 + 0.12 * _smooth_field(rng, n, size, 6) * _u(rng, 0.5, 1.5, n)
    wobble = 0.04 * _smooth_field(rng, n, size, 4)
    e = e + _u(rng, 0.0, 0.15, n) * np.sin(2 * np.pi * (r * _u(rng, 2, 6, n) + wobble * 3) + _u(rng, 0, 6.3, n))
    e = e + _u(rng, 0.3, 0.9, n) * _bump((r - _u(rng, 0.05, 0.25, n) - wobble) / _u(rng, 0.01, 0.025, n))
    vessel = rng.uniform(size=n) < 0.4
    line = _u(rng, 0.2, 0.85, n) + _u(rng, -0.5, 0.5, n) * x + _u(rng, -1.2, 1.2, n) * x * x
    w = _u(rng, 0.012, 0.03, n)
    tube = _bump((y - line) / w) * vessel[:, None, None]
    walls = _bump((np.abs(y - line) - 1.3 * w) / (0.35 * w)) * vessel[:, None, None]
    return np.clip(e, 0.1, None) * (1 - _u(rng, 0.5, 0.85, n) * tube) + _u(rng, 0.0, 0.3, n) * walls


def _lesions(rng: np.random.Generator, n: int, x, y, to_xy, depth):
    """Signed lesion coordinate d (< 1 inside), its angle, and the lesion centre in ray coordinates."""
    uc, rc = _u(rng, -0.6, 0.6, n), _u(rng, 0.25, 0.8, n) * depth
    cx, cy = to_xy(uc, rc)
    rx = _u(rng, 0.04, 0.16, n)
    ry = rx * _u(rng, 0.55, 1.3, n)
    phi = _u(rng, 0, np.pi, n)
    dx, dy = x - cx, y - cy
    px, py = dx * np.cos(phi) + dy * np.sin(phi), -dx * np.sin(phi) + dy * np.cos(phi)
    alpha = np.arctan2(py / ry, px / rx)
    outline = np.ones_like(alpha)
    rough = _u(rng, 0.0, 1.0, n)
    for k in range(2, 6):  # a lumpy outline: a few low harmonics of the boundary radius
        outline = outline + rough * _u(rng, 0, 0.12, n) / (k - 1) * np.cos(k * alpha + _u(rng, 0, 6.3, n))
    d = np.hypot(px / rx, py / ry) / outline
    return d.astype(np.float32), alpha.astype(np.float32), uc, rc, rx


def _chunk(rng: np.random.Generator, n: int, size: int, lesion_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(-0.5, 0.5, size, dtype=np.float32)[None, None, :]  # same scale as depth y
    y = np.linspace(0, 1, size, dtype=np.float32)[None, :, None]
    u, r, fov, soft, to_xy, lateral, depth = _geometry(rng, n, x, y)
    e = _tissue(rng, n, size, r, x, y)
    has = (rng.uniform(size=n) < lesion_fraction)[:, None, None]
    d, alpha, uc, rc, rx = _lesions(rng, n, x, y, to_xy, depth)
    inside = _sigmoid((1 - d) / _u(rng, 0.02, 0.08, n)) * has
    # Contrast: mostly clearly dark; ~15 % faint lesions that are hard to see.
    faint = rng.uniform(size=n) < 0.15
    contrast = np.where(faint, rng.uniform(0.55, 0.8, n), rng.uniform(0.08, 0.55, n)).astype(np.float32)[:, None, None]
    echoes = 1 + 0.3 * _smooth_field(rng, n, size, 8)  # internal echoes
    e = e * (1 - (1 - contrast * echoes) * inside)
    t = _u(rng, 1.5, 4.0, n) / (128 * rx)  # rim thickness: 1.5-4 pixels (at 128), relative to the radius
    partial = _u(rng, 0.0, 0.8, n) * (0.5 - 0.5 * np.cos(alpha - _u(rng, 0, 6.3, n)))
    rim = _bump((d - 1 - t / 2) / (t / 2)) * _u(rng, 0.3, 1.5, n) * (1 - partial) * has
    e = e * (1 + rim)
    # Below the lesion: posterior enhancement (cyst-like), shadowing (solid-like) or neither.
    kind = rng.uniform(size=n)
    gain = np.where(kind < 0.5, rng.uniform(1.1, 1.5, n), np.where(kind < 0.8, rng.uniform(0.5, 0.85, n), 1.0))
    ray = _bump((u - uc) * lateral / (0.8 * rx)) * _sigmoid((r - rc) / 0.03) * has * (1 - inside)
    e = e * (1 + (gain.astype(np.float32)[:, None, None] - 1) * ray)
    for _ in range(2):  # bright specular structures, each shadowing what lies below it
        on = (rng.uniform(size=n) < 0.45)[:, None, None]
        ub, rb = _u(rng, -0.85, 0.85, n), _u(rng, 0.1, 0.85, n) * depth
        wu, wr = _u(rng, 0.02, 0.08, n), _u(rng, 0.008, 0.02, n)
        away = np.where(has, _sigmoid((d - 1.4) * 10), 1.0)  # never on top of the lesion
        blob = _bump((u - ub) * lateral / wu) * _bump((r - rb) / wr) * on * away
        shadow = _bump((u - ub) * lateral / (0.8 * wu)) * _sigmoid((r - rb - wr) / 0.02) * on
        e = e * (1 - _u(rng, 0.5, 0.9, n) * shadow) + _u(rng, 1.0, 2.5, n) * blob
    e = e * np.exp(-_u(rng, 0.3, 1.8, n) * r) * (1 + _u(rng, 0.0, 1.0, n) * r)  # attenuation, partial TGC
    scale = size / 128
    field = rng.standard_normal((2, n, size, size), dtype=np.float32)
    sy, sx = rng.uniform(0.5, 1.0, n) * scale, rng.uniform(0.8, 1.6, n) * scale
    envelope = np.hypot(_blur(field[0], sy, sx), _blur(field[1], sy, sx))
    envelope /= envelope.mean(axis=(1, 2), keepdims=True)  # Rayleigh amplitude with mean 1
    k = _u(rng, 3, 10, n)
    img = np.log1p(k * e * envelope) / np.log1p(k * 2.5)  # log compression
    img = img * _u(rng, 0.8, 1.15, n) + _u(rng, -0.05, 0.05, n)
    img = img * soft + rng.standard_normal(img.shape, dtype=np.float32) * _u(rng, 0.005, 0.02, n)
    mask = (d < 1) & has & fov
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8), mask.astype(np.uint8)


def make_synthetic_ultrasound(n: int, size: int = 128, seed: int = 0, *,
                              lesion_fraction: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """SYNTHETIC ultrasound-like images and lesion masks: (uint8 N×size×size, uint8 N×size×size 0/1).

    About ``lesion_fraction`` of the images hold a lesion; the others have an empty mask.
    Deterministic for a given (n, size, seed, lesion_fraction).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DataError(f"number of synthetic images must be a positive integer, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise DataError(f"synthetic image size {size!r} is outside [{MIN_SIZE}, {MAX_SIZE}]: pick e.g. 128")
    if not 0 <= lesion_fraction <= 1:
        raise DataError(f"lesion_fraction {lesion_fraction!r} must be in [0, 1]: e.g. 0.75")
    images, masks = np.empty((n, size, size), np.uint8), np.empty((n, size, size), np.uint8)
    for i, start in enumerate(range(0, n, _CHUNK)):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), i]))
        m = min(_CHUNK, n - start)
        images[start : start + m], masks[start : start + m] = _chunk(rng, m, int(size), float(lesion_fraction))
    return images, masks


def synthetic_ultrasound_splits(n_train: int = 800, n_val: int = 200, n_test: int = 200, size: int = 128,
                                seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Raw (images, masks) for train/val/test, each split from its own seed derived from ``seed``."""
    counts = {"train": n_train, "val": n_val, "test": n_test}
    return {s: make_synthetic_ultrasound(k, size, _split_seed(seed, i)) for i, (s, k) in enumerate(counts.items())}


def load_synthetic_ultrasound(pre: Preprocessing, *, n_train: int = 800, n_val: int = 200, n_test: int = 200,
                              size: int = 128, seed: int = 0, max_samples: int | None = None) -> SegDataset:
    """The SYNTHETIC ultrasound segmentation set as a :class:`SegDataset` (format "synthetic", K = 2).

    ``max_samples`` caps each split by generating fewer images; ``sha256`` hashes the generated
    arrays so a report still identifies the exact data.
    """
    check_max_samples(max_samples)
    resolved = resolve(pre, 1)
    out_hw = output_size((size, size), resolved)
    cap = (lambda k: k) if max_samples is None else (lambda k: min(k, max_samples))
    raw = synthetic_ultrasound_splits(cap(n_train), cap(n_val), cap(n_test), size, seed)
    digest = hashlib.sha256()
    splits = {}
    for s, (images, masks) in raw.items():
        digest.update(images.tobytes())
        digest.update(masks.tobytes())
        splits[s] = SegSplit(preprocess(images, resolved), finish_masks(masks, False, out_hw))
    extra = {"synthetic": True, "note": "procedurally generated, not real patients",
             "generator": "edgekd.data.synthetic_us.make_synthetic_ultrasound", "native_size": [size, size],
             "seed": seed, **seg_extra(splits, 2, False)}
    return SegDataset(
        train=splits["train"], val=splits["val"], test=splits["test"], num_classes=2, channels=1,
        image_size=out_hw, class_names=list(CLASS_NAMES), format="synthetic", preprocessing=resolved,
        path=None, sha256=digest.hexdigest(), extra=extra,
    )
