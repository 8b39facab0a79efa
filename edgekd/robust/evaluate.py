"""A model's metric under every shift, and how far it falls from its clean figure.

Task-agnostic: the model is a runner (``edgekd.lower._base.Runner``: logits N×K) or any function
from a preprocessed batch to outputs, and the metric is a function ``metric_fn(outputs, truth)``
passed in — ROC AUC for classification, mean Dice for segmentation (whose masks, given as
``masks``, are moved with the image by the geometric shifts and are then the ``truth``).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .shifts import DEFAULT_SHIFTS, Shift, shifted, shifted_masks

BATCH = 128  # images shifted and predicted at a time (memory stays bounded at any image size)


@dataclass(frozen=True)
class ShiftScore:
    """The metric under one shift at one severity."""

    shift: Shift
    metric: float
    drop: float  # clean − metric: positive when the shift hurts

    def to_dict(self) -> dict:
        return {"shift": self.shift.name, "severity": self.shift.severity, "value": self.shift.value,
                "metric": self.metric, "drop": self.drop}


@dataclass(frozen=True)
class Robustness:
    """One model on one split: its clean metric and the metric under every shift."""

    metric: str  # what the metric is, e.g. "auc" or "dice"
    clean: float
    scores: tuple[ShiftScore, ...]
    images: int  # how many images were scored
    seed: int
    seconds: float  # this model's predictions took this long (the shifts, made once for all models, not counted)

    @property
    def mean_drop(self) -> float:
        """The mean of the drops over every shift and severity (NaN when none is finite)."""
        drops = np.array([s.drop for s in self.scores], dtype=np.float64)
        return float(np.nanmean(drops)) if np.isfinite(drops).any() else float("nan")

    def worst(self) -> ShiftScore | None:
        finite = [s for s in self.scores if np.isfinite(s.drop)]
        return max(finite, key=lambda s: s.drop, default=None)

    def score(self, name: str, severity: int) -> ShiftScore | None:
        return next((s for s in self.scores if s.shift.name == name and s.shift.severity == severity), None)

    def to_dict(self) -> dict:
        worst = self.worst()
        return {"metric": self.metric, "clean": self.clean, "mean_drop": self.mean_drop,
                "worst": worst.shift.key if worst else None, "images": self.images, "seed": self.seed,
                "seconds": self.seconds, "scores": [s.to_dict() for s in self.scores]}


def _predictor(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    from ..lower._base import Runner, predict_batched

    if isinstance(model, Runner):
        return lambda x: predict_batched(model, x, desc="robustness")
    if callable(model):
        return lambda x: np.asarray(model(x))
    raise InputError(f"robustness needs a runner or a function of a batch, got {type(model).__name__}")


def robustness(model: Any, images: np.ndarray, labels: np.ndarray | None, metric_fn: Callable[[np.ndarray, Any], float],
               shifts: tuple[Shift, ...] = DEFAULT_SHIFTS, seed: int = 0, *, mean=(0.5,), std=(0.5,),
               masks: np.ndarray | None = None, metric: str = "metric", batch_size: int = BATCH) -> Robustness:
    """``model`` scored by ``metric_fn`` on ``images`` clean and under each of ``shifts``.

    ``images``: preprocessed N×C×H×W (normalised with ``mean``/``std``). ``metric_fn(outputs,
    truth)``: ``truth`` is ``labels``, or, when ``masks`` (N×H×W) is given, the masks moved like the
    images (geometric shifts) or as they are (the others).
    """
    return robustness_of({"model": model}, images, labels, metric_fn, shifts, seed, mean=mean, std=std, masks=masks,
                         metric=metric, batch_size=batch_size)["model"]


def robustness_of(models: Mapping[str, Any], images: np.ndarray, labels: np.ndarray | None,
                  metric_fn: Callable[[np.ndarray, Any], float], shifts: tuple[Shift, ...] = DEFAULT_SHIFTS,
                  seed: int = 0, *, mean=(0.5,), std=(0.5,), masks: np.ndarray | None = None, metric: str = "metric",
                  batch_size: int = BATCH) -> dict[str, Robustness]:
    """:func:`robustness` of several models on the same images: each shifted batch is made once and
    given to every model (the shifts cost as much as a small model's predictions)."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise InputError(f"robustness needs a non-empty N×C×H×W batch, got shape {images.shape}")
    if masks is None and labels is None:
        raise InputError("robustness needs labels (classification) or masks (segmentation)")
    if masks is not None and len(masks) != len(images):
        raise InputError(f"{len(masks)} masks for {len(images)} images")
    predict = {name: _predictor(m) for name, m in models.items()}
    seconds = dict.fromkeys(models, 0.0)

    def scores(shift: Shift | None) -> dict[str, float]:
        chunks: dict[str, list[np.ndarray]] = {name: [] for name in models}
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            if shift is not None:
                x = shifted(x, shift, seed, mean=mean, std=std, start=start)
            for name, fn in predict.items():
                t0 = time.perf_counter()
                chunks[name].append(fn(x))
                seconds[name] += time.perf_counter() - t0
        truth = labels if masks is None else (masks if shift is None else shifted_masks(masks, shift, seed))
        return {name: float(metric_fn(np.concatenate(c, axis=0), truth)) for name, c in chunks.items()}

    clean = scores(None)
    under = [(shift, scores(shift)) for shift in shifts]
    return {name: Robustness(metric, clean[name], tuple(ShiftScore(s, v[name], clean[name] - v[name]) for s, v in under),
                             len(images), int(seed), seconds[name]) for name in models}


def subset(n: int, max_images: int | None, seed: int) -> np.ndarray:
    """Indices of at most ``max_images`` of ``n`` images: all of them, or a seeded sorted sample."""
    if max_images is None or n <= max_images:
        return np.arange(n)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), n, max_images]))
    return np.sort(rng.choice(n, size=max_images, replace=False))
