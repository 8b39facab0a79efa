"""Acquisition shifts: a fixed, seeded set of image changes a deployed model meets in a clinic.

Another probe's speckle, a portable unit's exposure, a PACS's lossy export, a patient not quite
aligned. Each :class:`Shift` is one kind at one severity with one exact parameter, applied to a
**preprocessed** batch (N×C×H×W, normalised with the data's mean/std): the batch is mapped back
to ``[0, 1]`` pixels, changed, clamped to ``[0, 1]`` and normalised again, so "σ = 0.05" means 5 %
of the pixel range whatever ``--mean``/``--std`` are.

Randomness (noise, the sign of a rotation or a translation) is drawn per image from a numpy
Generator seeded by ``(seed, kind, severity, image index)``: the shifted image ``i`` is the same
whichever batch it is computed in, and no global random state is read or changed.
Geometric shifts move segmentation masks by the same parameters (:func:`shifted_masks`,
nearest neighbour); the photometric ones leave masks as they are.
"""
from __future__ import annotations

import contextlib
import io
import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError, did_you_mean

BORDER = "border"  # padding of geometric shifts: the edge pixels are repeated (as in distillation's views)


@dataclass(frozen=True)
class Kind:
    """One kind of shift: its parameter, the severities' values and how to say it exactly."""

    parameter: str  # what ``Shift.value`` is
    values: tuple[float, float, float]  # the default value at severity 1, 2, 3 (mild → severe)
    text: str  # describe() template; {v} is the value
    geometric: bool = False  # moves pixels (and masks) rather than changing their values
    random: bool = False  # draws from each image's Generator (noise, or the sign of a move)
    low: float = 0.0  # allowed values: low < v <= high
    high: float = math.inf


KINDS: dict[str, Kind] = {
    "gaussian-noise": Kind("σ (pixel units)", (0.03, 0.06, 0.10),
                           "additive Gaussian noise x + σ·n, n ~ N(0, 1) per pixel and channel, σ = {v} in [0,1] pixel units",
                           random=True),
    "speckle": Kind("σ (relative)", (0.10, 0.20, 0.35),
                    "multiplicative (speckle) noise x·(1 + σ·n), n ~ N(0, 1) per pixel and channel, σ = {v}",
                    random=True),
    "gaussian-blur": Kind("σ (share of the side)", (0.01, 0.02, 0.03),
                          "Gaussian blur, σ = {v} × the image side along each axis (σ_y = {v}·H, σ_x = {v}·W px), "
                          "kernel 2·ceil(3σ)+1 px per axis, reflected border (kornia.filters.gaussian_blur2d)"),
    "contrast": Kind("factor", (0.75, 0.5, 0.3), "contrast reduced: m + c·(x − m), c = {v}, m = the image's mean per "
                                                  "channel", high=1.0),
    "gamma": Kind("γ", (1.25, 1.6, 2.0), "gamma x^γ, γ = {v} (> 1 darkens the mid-tones)"),
    "jpeg": Kind("quality", (75, 40, 15), "JPEG of the 8-bit image round(255·x), Pillow quality {v}, subsampling "
                                          "4:2:0 for RGB, one L image per channel otherwise, decoded back /255",
                 low=0.0, high=100.0),
    "rotation": Kind("degrees", (5.0, 10.0, 15.0), "rotation by ±{v}° about the image centre (sign drawn per image; "
                                                    "kornia.geometry.rotate, bilinear, border repeated; masks nearest)",
                     geometric=True, random=True, high=180.0),
    "translation": Kind("share of the side", (0.05, 0.10, 0.15),
                        "translation by ±round({v}·W) px across and ±round({v}·H) px down (signs drawn per image and axis; "
                        "whole pixels, border repeated; masks moved the same)", geometric=True, random=True, high=0.5),
}


@dataclass(frozen=True)
class Shift:
    """One kind of shift at one severity, with its exact parameter."""

    name: str  # a key of KINDS
    severity: int  # 1 (mild) … 3 (severe); only a label, ``value`` is what is applied
    value: float  # the kind's parameter (KINDS[name].parameter)

    def __post_init__(self) -> None:
        if self.name not in KINDS:
            raise InputError(f"unknown shift '{self.name}'{did_you_mean(str(self.name), KINDS)}: "
                             f"use one of {', '.join(KINDS)}")
        kind = KINDS[self.name]
        if not isinstance(self.severity, int) or isinstance(self.severity, bool) or self.severity < 1:
            raise InputError(f"shift {self.name}: severity must be an integer >= 1, got {self.severity!r}")
        if not isinstance(self.value, (int, float)) or isinstance(self.value, bool) \
                or not kind.low < self.value <= kind.high:
            raise InputError(f"shift {self.name}: {kind.parameter} must be in ({kind.low:g}, {kind.high:g}], "
                             f"got {self.value!r}")

    @property
    def key(self) -> str:
        return f"{self.name}@{self.severity}"

    @property
    def geometric(self) -> bool:
        return KINDS[self.name].geometric

    def describe(self) -> str:
        """Exactly what is done to each image (with the seeding), enough to reproduce it."""
        kind = KINDS[self.name]
        return (f"{self.name}, severity {self.severity}: {kind.text.format(v=_num(self.value))}; "
                "in [0,1] pixels (x·std + mean), clamped to [0,1], normalised again"
                + ("; randomness per image from numpy PCG64(SeedSequence([seed, crc32(name), severity, index]))"
                   if kind.random else "; no randomness"))

    def to_dict(self) -> dict:
        return {"name": self.name, "severity": self.severity, "parameter": KINDS[self.name].parameter,
                "value": self.value, "geometric": self.geometric, "description": self.describe()}


def _num(v: float) -> str:
    return f"{v:g}"


DEFAULT_SHIFTS: tuple[Shift, ...] = tuple(
    Shift(name, severity, kind.values[severity - 1]) for name, kind in KINDS.items() for severity in (1, 2, 3))


# --------------------------------------------------------------------------- seeding and pixel space


def image_rng(seed: int, shift: Shift, index: int) -> np.random.Generator:
    """The Generator of image ``index`` under ``shift``: independent of the batch it is computed in."""
    ss = np.random.SeedSequence([int(seed), zlib.crc32(shift.name.encode()), shift.severity, int(index)])
    return np.random.Generator(np.random.PCG64(ss))


def _channel_view(values: tuple[float, ...] | list[float] | float, c: int) -> np.ndarray:
    v = [float(values)] if isinstance(values, (int, float)) else [float(x) for x in values]
    if len(v) not in (1, c):
        raise InputError(f"mean/std have {len(v)} values for {c}-channel images: give 1 or {c}")
    return np.asarray(v * c if len(v) == 1 else v, dtype=np.float32).reshape(1, c, 1, 1)


def _as_batch(images: np.ndarray | torch.Tensor) -> np.ndarray:
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if x.ndim != 4:
        raise InputError(f"shifts take N×C×H×W batches, got shape {tuple(x.shape)}")
    return x.astype(np.float32, copy=False)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """torch on one thread for the kornia calls: small ops on a shared, busy machine are many times
    slower with a thread pool than without (and the result does not depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- the shifts themselves
# Each takes [0, 1] pixels N×C×H×W (float32 numpy) and one Generator per image, and returns pixels
# (not yet clamped). numpy does the elementwise work, kornia the filtering and resampling.


def _gaussian_noise(pix: np.ndarray, v: float, rngs: list[np.random.Generator]) -> np.ndarray:
    return pix + np.float32(v) * _normal(pix, rngs)


def _speckle(pix: np.ndarray, v: float, rngs: list[np.random.Generator]) -> np.ndarray:
    return pix * (1.0 + np.float32(v) * _normal(pix, rngs))


def _normal(pix: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
    shape = tuple(pix.shape[1:])
    return np.stack([r.standard_normal(shape, dtype=np.float32) for r in rngs])


def blur_sigmas(v: float, h: int, w: int) -> tuple[float, float]:
    """(σ_y, σ_x) in pixels of the Gaussian blur with share ``v`` of the side."""
    return v * h, v * w


def _blur(pix: np.ndarray, v: float, rngs: list[np.random.Generator]) -> np.ndarray:
    from kornia.filters import gaussian_blur2d

    h, w = pix.shape[-2:]
    sy, sx = blur_sigmas(v, h, w)
    # 2·ceil(3σ)+1 taps, at most 2·side − 1 (a reflected border needs the half-width below the side)
    ky, kx = (min(2 * math.ceil(3 * s) + 1, 2 * side - 1) for s, side in ((sy, h), (sx, w)))
    with _one_thread():
        return gaussian_blur2d(torch.from_numpy(pix), (ky, kx), (sy, sx), border_type="reflect").numpy()


def _contrast(pix: np.ndarray, v: float, rngs: list[np.random.Generator]) -> np.ndarray:
    m = pix.mean(axis=(2, 3), keepdims=True)
    return m + np.float32(v) * (pix - m)


def _gamma(pix: np.ndarray, v: float, rngs: list[np.random.Generator]) -> np.ndarray:
    return np.power(np.clip(pix, 0.0, 1.0), np.float32(v))


def _jpeg(pix: np.ndarray, v: float, rngs: list[np.random.Generator]) -> np.ndarray:
    from PIL import Image

    u8 = np.clip(np.rint(pix * 255.0), 0, 255).astype(np.uint8)
    out = np.empty(u8.shape, dtype=np.float32)

    def roundtrip(img: Image.Image) -> np.ndarray:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(v), subsampling=2 if img.mode == "RGB" else 0, optimize=False)
        buf.seek(0)
        with Image.open(buf) as dec:
            return np.asarray(dec.convert(img.mode), dtype=np.float32) / 255.0

    for i, im in enumerate(u8):
        if im.shape[0] == 3:
            out[i] = np.moveaxis(roundtrip(Image.fromarray(np.moveaxis(im, 0, -1), mode="RGB")), -1, 0)
        else:
            for ch in range(im.shape[0]):
                out[i, ch] = roundtrip(Image.fromarray(im[ch], mode="L"))
    return out


def geometry(shift: Shift, seed: int, n: int, start: int, h: int, w: int) -> np.ndarray:
    """Per image, what a geometric shift does: rotation N×1 (degrees), translation N×2 (dx, dy in whole
    pixels). Drawn from each image's Generator, so images and their masks move alike."""
    rngs = [image_rng(seed, shift, start + i) for i in range(n)]
    if shift.name == "rotation":
        return np.array([[shift.value * r.choice((-1.0, 1.0))] for r in rngs], dtype=np.float32)
    dx, dy = round(shift.value * w), round(shift.value * h)
    return np.array([[dx * r.choice((-1.0, 1.0)), dy * r.choice((-1.0, 1.0))] for r in rngs], dtype=np.float32)


def _move(x: np.ndarray, shift: Shift, params: np.ndarray, mode: str) -> np.ndarray:
    from kornia.geometry.transform import rotate, translate

    p, t = torch.from_numpy(params), torch.from_numpy(np.ascontiguousarray(x))
    with _one_thread():
        if shift.name == "rotation":
            return rotate(t, p[:, 0], mode=mode, padding_mode=BORDER, align_corners=True).numpy()
        return translate(t, p, mode=mode, padding_mode=BORDER, align_corners=True).numpy()


PHOTOMETRIC: dict[str, Callable[[np.ndarray, float, list[np.random.Generator]], np.ndarray]] = {
    "gaussian-noise": _gaussian_noise, "speckle": _speckle, "gaussian-blur": _blur, "contrast": _contrast,
    "gamma": _gamma, "jpeg": _jpeg,
}


def shifted(images: np.ndarray | torch.Tensor, shift: Shift, seed: int, *, mean=(0.5,), std=(0.5,),
            start: int = 0) -> np.ndarray:
    """``images`` (N×C×H×W, normalised with ``mean``/``std``) under ``shift``, as float32 numpy.

    ``start`` is the index of ``images[0]`` in the whole set, so a set shifted in chunks is the
    same as the set shifted at once.
    """
    x = _as_batch(images)
    n, c, h, w = x.shape
    m, s = _channel_view(mean, c), _channel_view(std, c)
    pix = np.clip(x * s + m, 0.0, 1.0)
    if shift.geometric:
        pix = _move(pix, shift, geometry(shift, seed, n, start, h, w), "bilinear")
    else:
        rngs = [image_rng(seed, shift, start + i) for i in range(n)]
        pix = PHOTOMETRIC[shift.name](pix, float(shift.value), rngs)
    return ((np.clip(pix, 0.0, 1.0) - m) / s).astype(np.float32, copy=False)


def shifted_masks(masks: np.ndarray | torch.Tensor, shift: Shift, seed: int, *, start: int = 0) -> np.ndarray:
    """Integer masks N×H×W moved like their images under ``shift`` (nearest neighbour, border repeated);
    unchanged by photometric shifts."""
    arr = np.asarray(masks)
    if arr.ndim != 3:
        raise InputError(f"masks must be N×H×W class indices, got shape {arr.shape}")
    if not shift.geometric:
        return arr
    n, h, w = arr.shape
    moved = _move(arr.astype(np.float32)[:, None], shift, geometry(shift, seed, n, start, h, w), "nearest")[:, 0]
    return np.rint(moved).astype(arr.dtype)
