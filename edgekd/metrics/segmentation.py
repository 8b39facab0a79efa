"""Segmentation metrics from integer label maps: Dice, IoU and HD95, per class and mean, with
percentile bootstrap CIs over images and a paired Dice difference between two models.

Inputs are N×H×W (or one H×W) maps of class indices 0..K−1: the prediction (the argmax of the
logits over the class axis) and the truth, for the same images. Every figure is computed **per
image**, then averaged over images:

* **Dice** = 2·|P∩T| / (|P| + |T|) and **IoU** = |P∩T| / |P∪T| of class c in one image. When c
  is absent from both the prediction and the truth the image is *skipped* for c (NaN, left out
  of c's mean): there is nothing to find and nothing was found. A false positive on an image
  without c scores 0, a missed c scores 0.
* **HD95**: the 95th-percentile symmetric Hausdorff distance in pixels between the boundaries of
  P and T (boundary: the mask's pixels that a 3×3 cross erosion removes, pixels outside the
  image counting as background), ``max(P95 d(∂P→∂T), P95 d(∂T→∂P))`` with Euclidean distances
  from ``scipy.ndimage.distance_transform_edt`` and linear-interpolated percentiles (the MONAI
  convention). Undefined (NaN, left out of the mean and counted in ``hd95_undefined``) when P or
  T is empty for that class: a distance to nothing has no value (a missed lesion shows in Dice).
* Split by the truth, because the mean mixes two questions: **Dice where present** is class c's
  mean Dice over the images whose truth holds c (how well it is outlined), and **false alarms**
  count the images whose truth lacks c where the model marks c anyway (each of which scores 0 in
  the mean Dice, however few pixels it marks), out of **images without** c.
* A class's figure is the mean over the images where it is defined (NaN when none is); the
  **mean** figure is the mean over classes 1..K−1 (background excluded) unless
  ``include_background``, ignoring classes with no defined image.

CIs resample the images with replacement (seeded numpy) and recompute the whole statistic; a
resample where it is undefined is dropped, and the CI is None when fewer than half are usable.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError, MissingDependencyError
from .classification import _percentile_ci

BOOTSTRAP_RESAMPLES = 1000
CI_LEVEL = 0.95
HD_PERCENTILE = 95.0
_CHUNK_PIXELS = 1 << 22  # label pixels counted together
_CHUNK_WEIGHTS = 4_000_000  # resamples × images held at once


def _maps(pred, truth, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated int64 N×H×W prediction and truth, or a one-line InputError."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise InputError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    out = []
    for what, m in (("prediction", pred), ("truth", truth)):
        m = np.asarray(m)
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3:
            raise InputError(f"the {what} has shape {m.shape}: pass N×H×W (or H×W) label maps of class indices")
        if m.dtype != np.bool_ and not np.issubdtype(m.dtype, np.integer):
            raise InputError(f"the {what} has dtype {m.dtype}: pass integer label maps (for logits N×K×H×W, "
                             "their argmax over the class axis)")
        if m.size and (m.min() < 0 or m.max() >= num_classes):
            bad = m.min() if m.min() < 0 else m.max()
            raise InputError(f"the {what} holds the class {bad}, outside 0..{num_classes - 1} (num_classes "
                             f"{num_classes}): pass class indices, or the right num_classes")
        out.append(m.astype(np.int64, copy=False))
    if out[0].shape != out[1].shape:
        raise InputError(f"prediction and truth differ in shape ({out[0].shape} vs {out[1].shape}): "
                         "pass label maps of the same images, at the same size")
    return out[0], out[1]


def overlap_counts(pred, truth, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true positives, false positives, false negatives) pixel counts, each N×K, per image and class."""
    pred, truth = _maps(pred, truth, num_classes)
    n, k = len(pred), int(num_classes)
    conf = np.zeros((n, k, k), dtype=np.int64)  # [image, truth class, predicted class]
    step = max(1, _CHUNK_PIXELS // max(1, pred[0].size if n else 1))
    for s in range(0, n, step):
        p, t = pred[s : s + step].reshape(-1), truth[s : s + step].reshape(-1)
        m = min(step, n - s)
        image = np.repeat(np.arange(m), pred[0].size)
        conf[s : s + m] = np.bincount((image * k + t) * k + p, minlength=m * k * k).reshape(m, k, k)
    tp = np.diagonal(conf, axis1=1, axis2=2).copy()
    return tp, conf.sum(axis=1) - tp, conf.sum(axis=2) - tp


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def dice_scores(pred, truth, num_classes: int) -> np.ndarray:
    """N×K Dice per image and class; NaN where the class is absent from both (skipped)."""
    return dice_from_counts(*overlap_counts(pred, truth, num_classes))


def dice_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """N×K Dice from :func:`overlap_counts`; NaN where the class is absent from both."""
    return _ratio(2 * tp, 2 * tp + fp + fn)


def iou_scores(pred, truth, num_classes: int) -> np.ndarray:
    """N×K IoU (Jaccard) per image and class; NaN where the class is absent from both (skipped)."""
    tp, fp, fn = overlap_counts(pred, truth, num_classes)
    return _ratio(tp, tp + fp + fn)


def hd95(a, b, percentile: float = HD_PERCENTILE) -> float:
    """Symmetric percentile Hausdorff distance in pixels between the boundaries of two H×W masks (module
    docstring); NaN when either mask is empty."""
    try:
        from scipy import ndimage
    except ImportError:  # pragma: no cover - scipy comes with nncf
        raise MissingDependencyError("HD95 needs scipy: pip install scipy") from None
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 2:
        raise InputError(f"hd95 takes two H×W masks of the same shape, got {a.shape} and {b.shape}")
    if not a.any() or not b.any():
        return float("nan")
    rows, cols = np.flatnonzero((a | b).any(axis=1)), np.flatnonzero((a | b).any(axis=0))
    # Crop to both masks plus a one-pixel background margin: the erosion and every boundary pixel, hence
    # every boundary-to-boundary distance, are unchanged, and the distance transforms get much cheaper.
    box = (slice(max(0, rows[0] - 1), rows[-1] + 2), slice(max(0, cols[0] - 1), cols[-1] + 2))
    a, b = a[box], b[box]
    cross = ndimage.generate_binary_structure(2, 1)
    edge_a = a & ~ndimage.binary_erosion(a, structure=cross, border_value=0)
    edge_b = b & ~ndimage.binary_erosion(b, structure=cross, border_value=0)
    to_a, to_b = ndimage.distance_transform_edt(~edge_a), ndimage.distance_transform_edt(~edge_b)
    return float(max(np.percentile(to_b[edge_a], percentile), np.percentile(to_a[edge_b], percentile)))


def hd95_scores(pred, truth, num_classes: int, *, include_background: bool = False) -> np.ndarray:
    """N×K HD95 per image and class (pixels); NaN where either mask is empty, and for class 0 unless included."""
    pred, truth = _maps(pred, truth, num_classes)
    out = np.full((len(pred), num_classes), np.nan)
    for c in range(0 if include_background else 1, num_classes):
        for i in range(len(pred)):
            out[i, c] = hd95(pred[i] == c, truth[i] == c)
    return out


def _classes(num_classes: int, include_background: bool) -> list[int]:
    return list(range(0 if include_background else 1, num_classes))


def _statistic(weights: np.ndarray, values: np.ndarray, classes: list[int]) -> np.ndarray:
    """Mean over ``classes`` of each class's weighted mean over images, for each row of weights (R×N)."""
    v = values[:, classes]
    valid = ~np.isnan(v)
    sums, counts = weights @ np.where(valid, v, 0.0), weights @ valid.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(counts > 0, sums / counts, np.nan)
        n_ok = (~np.isnan(per_class)).sum(axis=1)
        return np.where(n_ok > 0, np.nansum(per_class, axis=1) / np.maximum(n_ok, 1), np.nan)


def _resampled(models: list[np.ndarray], classes: list[int], resamples: int, seed: int) -> np.ndarray | None:
    """models × resamples statistics, every model on the same seeded resamples of the images."""
    n = len(models[0])
    if resamples <= 0 or n == 0:
        return None
    rng = np.random.default_rng(seed)
    chunk, out = max(1, _CHUNK_WEIGHTS // n), []
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(b, n))
        w = np.bincount((np.arange(b)[:, None] * n + idx).ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        out.append(np.stack([_statistic(w, v, classes) for v in models]))
    return np.concatenate(out, axis=1)


def bootstrap_ci(scores: np.ndarray, *, include_background: bool = False, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = 0, level: float = CI_LEVEL) -> tuple[float, float] | None:
    """Percentile bootstrap CI over images of the mean of N×K per-image ``scores`` (or N for one class)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores, include_background = scores[:, None], True
    stats = _resampled([scores], _classes(scores.shape[1], include_background), resamples, seed)
    return None if stats is None else _percentile_ci(stats[0], resamples, level)


def mean_score(scores: np.ndarray, *, include_background: bool = False) -> float:
    """The point estimate of N×K per-image ``scores``: mean over classes of each class's mean over images."""
    scores = np.asarray(scores, dtype=np.float64)
    classes = _classes(scores.shape[1], include_background)
    return float(_statistic(np.ones((1, len(scores))), scores, classes)[0])


def per_class_means(scores: np.ndarray) -> list[float]:
    with np.errstate(invalid="ignore"):
        valid = ~np.isnan(scores)
        return [float(np.nanmean(scores[:, c])) if valid[:, c].any() else float("nan") for c in range(scores.shape[1])]


@dataclass
class SegMetrics:
    dice: list[float]  # per class c (index c): mean Dice over the images where c is defined
    iou: list[float]  # per class, as dice
    mean_dice: float  # over classes 1..K-1 (all classes when include_background)
    mean_iou: float
    dice_ci: tuple[float, float] | None  # percentile bootstrap CI of mean_dice over images
    iou_ci: tuple[float, float] | None
    hd95: list[float] | None = None  # per class, pixels (class 0 NaN unless include_background); None: not computed
    mean_hd95: float | None = None
    hd95_ci: tuple[float, float] | None = None
    hd95_undefined: list[int] | None = None  # per class: images left out because a mask was empty
    n_images: int = 0
    include_background: bool = False
    dice_present: list[float] | None = None  # per class: mean Dice over the images whose truth holds the class
    mean_dice_present: float | None = None  # over the scored classes, as mean_dice
    false_alarms: list[int] | None = None  # per class: images whose truth lacks it where the model marks it
    images_without: list[int] | None = None  # per class: images whose truth lacks it

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("dice_ci", "iou_ci", "hd95_ci"):
            d[key] = list(d[key]) if d[key] is not None else None
        return d


def evaluate_segmentation(pred, truth, num_classes: int, *, include_background: bool = False, hd: bool = True,
                          resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, level: float = CI_LEVEL) -> SegMetrics:
    """Dice, IoU (and HD95 unless ``hd=False``) per class and mean, with seeded bootstrap CIs over images."""
    tp, fp, fn = overlap_counts(pred, truth, num_classes)
    dice, iou = dice_from_counts(tp, fp, fn), _ratio(tp, tp + fp + fn)
    ci = dict(include_background=include_background, resamples=resamples, seed=seed, level=level)
    out = SegMetrics(dice=per_class_means(dice), iou=per_class_means(iou),
                     mean_dice=mean_score(dice, include_background=include_background),
                     mean_iou=mean_score(iou, include_background=include_background),
                     dice_ci=bootstrap_ci(dice, **ci), iou_ci=bootstrap_ci(iou, **ci), n_images=len(dice),
                     include_background=include_background)
    out.dice_present, out.mean_dice_present, out.false_alarms, out.images_without = \
        presence_from_counts(tp, fp, fn, include_background=include_background)
    if hd:
        h = hd95_scores(pred, truth, num_classes, include_background=include_background)
        present = (tp + fp + fn) > 0  # an image absent from both is skipped, not "undefined"
        out.hd95, out.hd95_ci = per_class_means(h), bootstrap_ci(h, **ci)
        out.mean_hd95 = mean_score(h, include_background=include_background)
        scored = _classes(num_classes, include_background)
        out.hd95_undefined = [int((np.isnan(h[:, c]) & present[:, c]).sum()) if c in scored else 0
                              for c in range(num_classes)]
    return out


def presence_split(pred, truth, num_classes: int, *, include_background: bool = False
                   ) -> tuple[list[float], float, list[int], list[int]]:
    """(Dice where present per class, its mean over the scored classes, false alarms per class, images without
    per class) of N×H×W label maps (see the module docstring)."""
    return presence_from_counts(*overlap_counts(pred, truth, num_classes), include_background=include_background)


def presence_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, *, include_background: bool = False
                         ) -> tuple[list[float], float, list[int], list[int]]:
    """:func:`presence_split` from :func:`overlap_counts`' N×K counts."""
    present = (tp + fn) > 0
    dice = np.where(present, dice_from_counts(tp, fp, fn), np.nan)
    without = ~present
    alarms = without & (fp > 0)
    return (per_class_means(dice), mean_score(dice, include_background=include_background),
            [int(v) for v in alarms.sum(axis=0)], [int(v) for v in without.sum(axis=0)])


@dataclass
class SegPairedDiff:
    """mean Dice(model) − mean Dice(reference) on the same images, with a paired percentile bootstrap CI."""

    dice_diff: float
    ci: tuple[float, float] | None  # None when too few resamples were usable


def paired_dice_diff(pred, reference_pred, truth, num_classes: int, *, include_background: bool = False,
                     resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, level: float = CI_LEVEL) -> SegPairedDiff:
    """Mean Dice of ``pred`` minus that of ``reference_pred`` (e.g. student − teacher), paired bootstrap CI.

    Paired: each resample draws the same images for both models, so the CI is that of the
    difference. Each model's mean follows the module's skip rule on its own predictions.
    """
    a, b = dice_scores(pred, truth, num_classes), dice_scores(reference_pred, truth, num_classes)
    classes = _classes(num_classes, include_background)
    diff = mean_score(a, include_background=include_background) - mean_score(b, include_background=include_background)
    stats = _resampled([a, b], classes, resamples, seed)
    return SegPairedDiff(float(diff), None if stats is None else _percentile_ci(stats[0] - stats[1], resamples, level))


# ----------------------------------------------------------------------------- small regions
# A model's false alarm on a lesion-free image is often a speck a few pixels wide, and it costs that image
# its whole Dice (module docstring). The decision after the argmax may clear regions smaller than any the
# data set annotates: nnU-Net's connected-component post-processing, kept for a model only when it does
# not lower that model's val Dice (edgekd.tasks.segmentation). The device runner applies the same rule
# (edgekd/device/runner.py, numpy only; tests check the two agree).

REGION_PERCENTILE = 1.0  # of the region areas in the train masks, per class
REGION_FRACTION = 0.5  # min_region = this fraction of that percentile, in pixels


def _regions(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels H×W, area per label; label 0 is the outside) of the 8-connected regions of one boolean mask."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    return labels, np.bincount(labels.ravel(), minlength=n + 1)


def region_areas(masks, num_classes: int) -> list[np.ndarray]:
    """Per class c: the pixel areas of the 8-connected regions of class c in every mask of N×H×W label maps."""
    masks, _ = _maps(masks, masks, num_classes)
    out = [[] for _ in range(num_classes)]
    for m in masks:
        for c in range(1, num_classes):
            if (m == c).any():
                out[c].append(_regions(m == c)[1][1:])
    return [np.concatenate(a) if a else np.zeros(0, dtype=np.int64) for a in out]


def derive_min_region(train_masks, num_classes: int) -> list[int]:
    """Per class: half the 1st-percentile area of its regions in the train masks (0 for background and for
    a class with no region), the smallest predicted region the decision keeps."""
    out = []
    for c, areas in enumerate(region_areas(train_masks, num_classes)):
        out.append(0 if c == 0 or not len(areas)
                   else int(REGION_FRACTION * float(np.percentile(areas, REGION_PERCENTILE))))
    return out


def remove_small_regions(pred, min_region: list[int]) -> np.ndarray:
    """N×H×W (or H×W) label maps with every 8-connected region of class c smaller than ``min_region[c]``
    pixels set to background (0). A copy; class 0 is never touched."""
    pred = np.asarray(pred)
    single = pred.ndim == 2
    out = (pred[None] if single else pred).copy()
    for c, least in enumerate(min_region):
        if c == 0 or least <= 1:
            continue
        for m in out:
            mask = m == c
            if not mask.any():
                continue
            labels, areas = _regions(mask)
            small = areas < least
            small[0] = False
            m[small[labels]] = 0
    return out[0] if single else out
