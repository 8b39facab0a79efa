"""Robustness of a run's candidates: the teacher reference and every student that could ship, on test (and val for a budget).

The benchmark stage calls :func:`evaluate_candidates` after the clean figures are measured. Only
the teacher and the deployable students (the target's runtime and precisions, with metrics) are
scored: they are what the shipping choice compares; the other students are steps on the way.
Classification is scored by ROC AUC (macro one-vs-rest for more than two classes), segmentation by
mean foreground Dice (``metric="dice"``: a split's targets are masks, moved with the image by the
geometric shifts, and each model's per-pixel logits are reduced to argmax masks batch by batch).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .evaluate import robustness_of, subset
from .shifts import DEFAULT_SHIFTS, Shift


@dataclass(frozen=True)
class RobustRun:
    """What was evaluated, on how many images, and how long it took (report.json "robustness")."""

    evaluated: tuple[str, ...]  # candidate names, the teacher first
    images: dict[str, int]  # per split: images scored
    available: dict[str, int]  # per split: images in the split
    seconds: float  # wall time of the whole evaluation (shifts and predictions)
    shifts: tuple[Shift, ...]
    seed: int
    metric: str
    teacher_scored_by: str = ""  # the candidate whose runner scored the teacher (its fastest checked fp32 file)


def robust_candidates(teacher: Any, cands: list, profile: Any) -> list:
    """The teacher and the students the shipping choice could pick (the target's runtime and precisions, measured)."""
    students = [c for c in cands if c.role == "student" and c.metrics is not None and c.backend == profile.runtime
                and c.precision in profile.precisions]
    return [teacher] + [c for c in students if c is not teacher]


def runner_for(cand: Any, cands: list) -> Any:
    """What scores ``cand`` under shift: the runner of :func:`scored_by`."""
    return scored_by(cand, cands).runner


def scored_by(cand: Any, cands: list) -> Any:
    """The candidate whose runner scores ``cand``: a torch teacher's fastest own fp32 file that was checked.

    The same network, checked against the torch model when it was exported (agreement in the report),
    and 2–30× faster on a CPU: the torch teacher's predictions were almost all of the time the
    robustness step took (measured on the demo: 202 s, of which the torch teacher 194 s). Of the
    exported fp32 teachers the one with the lowest measured batch-1 latency runs (OpenVINO 22.5 ms
    against ONNX Runtime 29.1 ms for the segmentation benchmark's U-Net).
    """
    if cand.backend == "torch" and cand.role == "baseline":
        checked = [c for c in cands if c.role == "baseline" and c.backend != "torch" and c.precision == "fp32"
                   and c.agreement is not None and c.agreement.ok]
        if checked:
            return min(checked, key=lambda c: c.latency.p50 if c.latency is not None else float("inf"))
    return cand


def mean_dice_of(num_classes: int) -> Callable[[np.ndarray, np.ndarray], float]:
    """Mean foreground Dice (the segmentation report's figure) of argmax masks N×H×W against masks N×H×W."""
    from ..metrics.segmentation import dice_scores, mean_score

    return lambda pred, truth: mean_score(dice_scores(pred, truth, num_classes))


def _argmax_masks(runner: Any, cand: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The candidate's masks as its report scores them: argmax, then its small-region rule if val kept it."""
    from ..lower._base import predict_batched
    from ..metrics.segmentation import remove_small_regions

    rule = getattr(cand.metrics, "min_region", None)

    def masks(x: np.ndarray) -> np.ndarray:
        pred = predict_batched(runner, x, desc="robustness").argmax(1).astype(np.uint8)
        return pred if rule is None else remove_small_regions(pred, rule)

    return masks


def evaluate_candidates(teacher: Any, cands: list, profile: Any, splits: dict[str, tuple[np.ndarray, np.ndarray]], *,
                        mean, std, seed: int, max_images: int, shifts: tuple[Shift, ...] = DEFAULT_SHIFTS,
                        metric: str = "auc", num_classes: int = 2,
                        log: Callable[[str], None] = lambda msg: None) -> RobustRun:
    """Set ``robustness`` ({split: Robustness}) on the teacher and each deployable student.

    ``splits``: (images, labels) scored by ROC AUC (``metric="auc"``), or (images, masks N×H×W) scored
    by mean Dice over the foreground classes of ``num_classes`` (``metric="dice"``)."""
    from ..metrics.classification import roc_auc

    chosen = robust_candidates(teacher, cands, profile)
    if metric not in ("auc", "dice"):
        raise ValueError(f"robustness metric must be 'auc' or 'dice', got {metric!r}")
    masks = metric == "dice"
    metric_fn = mean_dice_of(num_classes) if masks else roc_auc
    t0 = time.perf_counter()
    images, available = {}, {}
    for split, (x, y) in splits.items():
        idx = subset(len(x), max_images, seed)
        images[split], available[split] = len(idx), len(x)
        models = {c.name: (_argmax_masks(runner_for(c, cands), c) if masks else runner_for(c, cands)) for c in chosen}
        results = robustness_of(models, x[idx], None if masks else y[idx], metric_fn, shifts, seed, mean=mean,
                                std=std, masks=y[idx] if masks else None, metric=metric)
        for c in chosen:
            c.robustness = {**(c.robustness or {}), split: results[c.name]}
    seconds = time.perf_counter() - t0
    log(f"robustness: {len(chosen)} models × {len(shifts)} shifts on "
        + ", ".join(f"{images[s]} {s}" for s in splits) + f" images in {seconds:.1f} s")
    return RobustRun(tuple(c.name for c in chosen), images, available, seconds, tuple(shifts), int(seed), metric,
                     scored_by(chosen[0], cands).name)
