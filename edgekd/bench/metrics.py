"""Clinical metrics: accuracy, ROC AUC, sensitivity and specificity at a threshold chosen on val.

Binary tasks use the positive-class probability (class 1, e.g. pneumonia) as the score.
Multi-class tasks use macro one-vs-rest AUC and, for sensitivity/specificity, the macro
average over classes of the one-vs-rest figures at the argmax decision.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def binary_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U with average ranks for ties)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_auc(logits: np.ndarray, labels: np.ndarray) -> float:
    """Binary: AUC of P(class 1). Multi-class: macro one-vs-rest AUC."""
    probs = softmax(np.asarray(logits, dtype=np.float64))
    labels = np.asarray(labels).reshape(-1)
    if probs.shape[1] == 2:
        return binary_auc(probs[:, 1], labels == 1)
    aucs = [binary_auc(probs[:, c], labels == c) for c in range(probs.shape[1])]
    aucs = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def youden_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold on P(positive) that maximises sensitivity + specificity − 1 (Youden's J)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    candidates = np.unique(scores)
    if len(candidates) == 0 or labels.all() or (~labels).all():
        return 0.5
    best_t, best_j = 0.5, -np.inf
    for t in candidates:
        pred = scores >= t
        sens = (pred & labels).sum() / labels.sum()
        spec = (~pred & ~labels).sum() / (~labels).sum()
        if sens + spec - 1 > best_j:
            best_j, best_t = sens + spec - 1, float(t)
    return best_t


@dataclass
class Metrics:
    accuracy: float
    auc: float
    sensitivity: float
    specificity: float
    threshold: float | None  # P(positive) threshold (binary); None for multi-class argmax

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_logits(
    test_logits: np.ndarray,
    test_labels: np.ndarray,
    val_logits: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
) -> Metrics:
    """All figures on test; the binary operating point is chosen on val (Youden's J)."""
    test_labels = np.asarray(test_labels).reshape(-1)
    probs = softmax(np.asarray(test_logits, dtype=np.float64))
    auc = roc_auc(test_logits, test_labels)
    if probs.shape[1] == 2:
        if val_logits is not None and val_labels is not None:
            vp = softmax(np.asarray(val_logits, dtype=np.float64))[:, 1]
            thr = youden_threshold(vp, np.asarray(val_labels).reshape(-1) == 1)
        else:
            thr = 0.5
        pred = (probs[:, 1] >= thr).astype(int)
        pos = test_labels == 1
        sens = float((pred[pos] == 1).mean()) if pos.any() else float("nan")
        spec = float((pred[~pos] == 0).mean()) if (~pos).any() else float("nan")
        acc = float((pred == test_labels).mean())
        return Metrics(acc, auc, sens, spec, thr)
    pred = probs.argmax(axis=1)
    sens_c, spec_c = [], []
    for c in range(probs.shape[1]):
        pos = test_labels == c
        if pos.any():
            sens_c.append((pred[pos] == c).mean())
        if (~pos).any():
            spec_c.append((pred[~pos] != c).mean())
    return Metrics(
        float((pred == test_labels).mean()), auc, float(np.mean(sens_c)), float(np.mean(spec_c)), None
    )
