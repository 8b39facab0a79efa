"""The report's ``clinical`` section: ROC curves, teacher agreement, disagreement cases, the
accuracy/latency Pareto front and the stage-by-stage waterfall.

Only what the report needs is kept: ROC points are downsampled (at most :data:`ROC_POINTS` per
curve) and the disagreement list is capped (:data:`MAX_DISAGREEMENTS`, the total is recorded), so
no candidate's full test logits are written. The Pareto front and the waterfall are functions of
the report's candidates alone, so they can be recomputed from report.json.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..metrics.classification import (
    CI_LEVEL,
    ECE_BINS,
    Metrics,
    paired_auc_diff,
    predict,
)

ROC_POINTS = 200  # per curve, after dropping collinear points
MAX_DISAGREEMENTS = 50  # cases listed; the total is recorded too

OPERATING_POINT_TEXT = {
    "teacher-sensitivity": "teacher: Youden's J on val; every other model: the highest val threshold whose val "
                           "sensitivity reaches the teacher's",
    "youden": "every model: its own Youden's J (max sensitivity + specificity − 1) on val",
}


def roc_points(probs: np.ndarray, labels: np.ndarray, max_points: int = ROC_POINTS) -> dict[str, list[float]]:
    """ROC curve (fpr, tpr) of P(class 1); micro-averaged one-vs-rest for multi-class.

    Points where the curve does not turn are dropped, then at most ``max_points`` are kept, evenly
    spaced along the curve and always including both ends.
    """
    labels = np.asarray(labels).reshape(-1)
    if probs.shape[1] == 2:
        scores, is_pos = probs[:, 1].astype(np.float64), labels == 1
    else:
        scores = probs.astype(np.float64).ravel()
        is_pos = (np.arange(probs.shape[1])[None, :] == labels[:, None]).ravel()
    order = np.argsort(-scores, kind="mergesort")
    scores, is_pos = scores[order], is_pos[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # last index of each distinct score
    tps = np.r_[0, np.cumsum(is_pos)[last]]
    fps = np.r_[0, (last + 1)] - tps
    if len(tps) > 2:  # drop points on a straight run (exact, on integer counts): the corners draw the same curve
        d_tp, d_fp = np.diff(tps), np.diff(fps)
        straight = d_fp[:-1] * d_tp[1:] == d_tp[:-1] * d_fp[1:]
        keep = np.r_[True, ~straight, True]
        tps, fps = tps[keep], fps[keep]
    tpr = tps / max(int(is_pos.sum()), 1)
    fpr = fps / max(int((~is_pos).sum()), 1)
    if len(fpr) > max_points:
        keep = np.unique(np.round(np.linspace(0, len(fpr) - 1, max_points)).astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [round(float(v), 6) for v in fpr], "tpr": [round(float(v), 6) for v in tpr]}


def _case_prob(m: Metrics, i: int, pred: int) -> float:
    """Binary: P(class 1); multi-class: the probability of the predicted class."""
    p = m.test_probs
    return float(p[i, 1] if p.shape[1] == 2 else p[i, pred])


def agreement_share(teacher: Metrics, model: Metrics) -> float:
    """Share of test cases where both models predict the same class, each at its own operating point."""
    return float((predict(teacher.test_probs, teacher.threshold) == predict(model.test_probs, model.threshold)).mean())


def disagreements(teacher: Metrics, model: Metrics, labels: np.ndarray, cap: int = MAX_DISAGREEMENTS) -> dict:
    """The test cases where ``model`` and the teacher predict differently, largest probability gap first.

    Each case: ``index`` into the test split, the true ``label``, and each model's predicted class
    and probability (binary: P(class 1); multi-class: of its predicted class).
    """
    labels = np.asarray(labels).reshape(-1)
    tp, mp = predict(teacher.test_probs, teacher.threshold), predict(model.test_probs, model.threshold)
    differ = np.flatnonzero(tp != mp)
    cases = [{"index": int(i), "label": int(labels[i]),
              "teacher_pred": int(tp[i]), "teacher_prob": round(_case_prob(teacher, i, tp[i]), 6),
              "model_pred": int(mp[i]), "model_prob": round(_case_prob(model, i, mp[i]), 6)} for i in differ]
    cases.sort(key=lambda c: (-abs(c["teacher_prob"] - c["model_prob"]), c["index"]))
    return {"n": int(len(labels)), "agreement": float(1.0 - len(differ) / max(len(labels), 1)),
            "disagreements_total": int(len(differ)), "cases": cases[:cap]}


def pareto_front(candidates: list[dict]) -> list[str]:
    """Names of the timed candidates no other beats on both AUC (higher) and p50 latency (lower)."""
    pts = [(c["name"], c["latency_ms"]["p50"], c["metrics"]["auc"]) for c in candidates
           if c.get("latency_ms") and c.get("metrics") and not np.isnan(c["metrics"]["auc"])]
    return [n for n, lat, auc in pts
            if not any(l2 <= lat and a2 >= auc and (l2 < lat or a2 > auc) for _, l2, a2 in pts)]


def waterfall(candidates: list[dict], teacher: str, shipped: str | None) -> list[str]:
    """Candidate names from the teacher to the shipped model, one per stage.

    teacher → distilled → pruned → the shipped model's own ancestry (quantized, lowered) followed
    through each candidate's ``source``; without a shipped model, the last quantized candidate.
    """
    by = {c["name"]: c for c in candidates}
    steps = [teacher] + [n for n in ("student-distilled", "student-pruned") if n in by]
    tail: list[str] = []
    name = shipped
    while name is not None and name in by and name not in steps and name not in tail:
        tail.append(name)
        name = by[name].get("source")
    if shipped is None:
        quant = [c["name"] for c in candidates if c["stage"] == "quantize"]
        tail = quant[-1:]
    return steps + tail[::-1]


def vs_teacher(teacher: Metrics, model: Metrics, labels: np.ndarray, resamples: int, seed: int,
               margin: float) -> dict:
    """Student − teacher test AUC with its paired 95 % bootstrap CI, and non-inferiority at ``margin``.

    Non-inferior: the CI's lower bound is above −``margin`` (the shipping budget's AUC drop).
    """
    d = paired_auc_diff(model.test_probs, teacher.test_probs, labels, resamples=resamples, seed=seed)
    return {"auc_diff": d.auc_diff, "auc_diff_ci95": list(d.ci) if d.ci is not None else None,
            "margin": margin, "non_inferior": d.ci is not None and bool(d.ci[0] > -margin),
            "level": CI_LEVEL, "resamples": resamples, "seed": seed}


def non_inferiority_text(v: dict | None) -> str:
    """'student − teacher test AUC −0.004 (95 % CI −0.012 … +0.003): non-inferior at the 0.01 margin'."""
    if not v:
        return "no paired comparison with the teacher"
    ci = v.get("auc_diff_ci95")
    span = f"95 % CI {_signed(ci[0])} … {_signed(ci[1])}" if ci else "no CI: too few usable resamples"
    verdict = "non-inferior" if v.get("non_inferior") else "not shown non-inferior"
    return f"student − teacher test AUC {_signed(v['auc_diff'])} ({span}): {verdict} at the {v['margin']:g} margin"


def _signed(x: float) -> str:
    return f"{x:+.3f}".replace("-", "−")


def clinical_section(cands: list[Any], shipped: Any | None, test_labels: np.ndarray, candidate_dicts: list[dict],
                     operating_point: str, resamples: int, seed: int, margin: float) -> dict:
    """The ``clinical`` block of report.json, from the measured candidates (edgekd.measure.candidates.Candidate)."""
    from ..ship import teacher_reference

    teacher = teacher_reference(cands)
    by = {c.name: c for c in cands}
    student = by.get("student-distilled")
    tm = teacher.metrics
    roc = {}
    for role, c in (("teacher", teacher), ("student", student), ("shipped", shipped)):
        if c is not None and c.metrics is not None and c.metrics.test_probs is not None:
            roc[role] = {"candidate": c.name, "auc": c.metrics.auc, **roc_points(c.metrics.test_probs, test_labels)}
    agree = {c.name: agreement_share(tm, c.metrics) for c in cands
             if c.metrics is not None and c.metrics.test_probs is not None}
    paired = {c.name: vs_teacher(tm, c.metrics, test_labels, resamples, seed, margin) for c in cands
              if c.role == "student" and c.metrics is not None and c.metrics.test_probs is not None}
    dis = None
    if shipped is not None and shipped.metrics is not None and shipped.metrics.test_probs is not None:
        dis = {"teacher": teacher.name, "model": shipped.name,
               **disagreements(tm, shipped.metrics, test_labels)}
    return {
        "operating_point": {"setting": operating_point, "teacher": teacher.name,
                            "teacher_threshold": tm.threshold, "teacher_val_sensitivity": tm.val_sensitivity,
                            "rule": OPERATING_POINT_TEXT.get(operating_point, operating_point)},
        "bootstrap": {"resamples": resamples, "level": CI_LEVEL, "method": "percentile", "seed": seed},
        "ece_bins": ECE_BINS,
        "roc": roc,
        "teacher_agreement": agree,
        "vs_teacher": paired,
        "disagreements": dis,
        "pareto_front": pareto_front(candidate_dicts),
        "waterfall": waterfall(candidate_dicts, teacher.name, shipped.name if shipped else None),
    }
