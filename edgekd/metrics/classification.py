"""Clinical metrics: AUC with a bootstrap CI, sensitivity/specificity at an operating point chosen
on val, expected calibration error, per-class figures.

Binary tasks use the positive-class probability (class 1, e.g. pneumonia) as the score and a
threshold on it chosen on **val**, never on test:

- ``youden``: the threshold maximising sensitivity + specificity − 1 (Youden's J);
- ``teacher-sensitivity``: the highest threshold whose val sensitivity is at least a target (the
  teacher's val sensitivity at its own Youden threshold), so a student is compared with the
  teacher at the sensitivity the teacher was operated at. The teacher itself uses Youden's J.

Multi-class tasks use macro one-vs-rest AUC and, for sensitivity/specificity, the macro average
over classes of the one-vs-rest figures at the argmax decision (per-class figures are kept too).

Val AUC and val sensitivity are kept as well: the shipping choice is made on them (edgekd.api).
:func:`paired_auc_diff` gives AUC(student) − AUC(teacher) with a paired bootstrap CI (the same
resampled test cases for both models), for the non-inferiority statement of the report.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

OPERATING_POINTS = ("teacher-sensitivity", "youden")
BOOTSTRAP_RESAMPLES = 1000
CI_LEVEL = 0.95
ECE_BINS = 15


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- AUC


def _auc_from_counts(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUC per row from counts of positives/negatives at each distinct score (columns ascending).

    Mann–Whitney U: every (positive, negative) pair scores 1 when the positive is higher, ½ on a tie.
    """
    n_pos, n_neg = pos.sum(axis=-1), neg.sum(axis=-1)
    neg_below = np.cumsum(neg, axis=-1) - neg
    u = (pos * (neg_below + 0.5 * neg)).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def binary_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U, ties count ½); NaN when a class is absent."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).astype(bool).reshape(-1)
    _, codes = np.unique(scores, return_inverse=True)
    n = int(codes.max()) + 1 if len(codes) else 0
    pos = np.bincount(codes[labels], minlength=n).astype(np.float64)
    neg = np.bincount(codes[~labels], minlength=n).astype(np.float64)
    return float(_auc_from_counts(pos, neg))


def roc_auc(logits: np.ndarray, labels: np.ndarray) -> float:
    """Binary: AUC of P(class 1). Multi-class: macro one-vs-rest AUC (classes absent from labels skipped)."""
    return auc_of_probs(softmax(np.asarray(logits, dtype=np.float64)), labels)


def auc_of_probs(probs: np.ndarray, labels: np.ndarray) -> float:
    labels = np.asarray(labels).reshape(-1)
    if probs.shape[1] == 2:
        return binary_auc(probs[:, 1], labels == 1)
    aucs = [binary_auc(probs[:, c], labels == c) for c in range(probs.shape[1])]
    aucs = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def bootstrap_auc_ci(probs: np.ndarray, labels: np.ndarray, *, resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = 0, level: float = CI_LEVEL) -> tuple[float, float] | None:
    """Percentile bootstrap CI of the AUC (macro one-vs-rest for multi-class), seeded.

    Test cases are drawn with replacement ``resamples`` times; each resample's AUC is computed
    from per-score counts (one ``bincount`` for all resamples), so 1000 resamples of a few
    thousand cases take milliseconds. Resamples missing a class are dropped. None when fewer
    than half of the resamples are usable or ``resamples`` is 0.
    """
    aucs = resampled_aucs([probs], labels, resamples=resamples, seed=seed)
    return None if aucs is None else _percentile_ci(aucs[0], resamples, level)


@dataclass
class PairedDiff:
    """AUC(model) − AUC(reference) on the same test cases, with a paired percentile bootstrap CI."""

    auc_diff: float  # on the whole test split
    ci: tuple[float, float] | None  # None when too few resamples were usable (see bootstrap_auc_ci)


def paired_auc_diff(probs: np.ndarray, reference_probs: np.ndarray, labels: np.ndarray, *,
                    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, level: float = CI_LEVEL) -> PairedDiff:
    """AUC(``probs``) − AUC(``reference_probs``) with a paired bootstrap CI, seeded.

    Paired: every resample draws the same test cases for both models (one index matrix), so the
    CI is that of the difference, not of two independent AUCs. Macro one-vs-rest for multi-class,
    as :func:`roc_auc`.
    """
    diff = auc_of_probs(probs, labels) - auc_of_probs(reference_probs, labels)
    aucs = resampled_aucs([probs, reference_probs], labels, resamples=resamples, seed=seed)
    ci = None if aucs is None else _percentile_ci(aucs[0] - aucs[1], resamples, level)
    return PairedDiff(float(diff), ci)


def resampled_aucs(models: list[np.ndarray], labels: np.ndarray, *, resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = 0) -> np.ndarray | None:
    """models × resamples AUCs, every model scored on the same seeded bootstrap resamples of the cases.

    NaN where a resample misses a class. None when ``resamples`` is 0 or there are no cases.
    """
    labels = np.asarray(labels).reshape(-1)
    n = len(labels)
    if resamples <= 0 or n == 0:
        return None
    rng = np.random.default_rng(seed)
    coded = [_coded_scores(probs, labels) for probs in models]
    chunk = max(1, 4_000_000 // max(n, 1))  # bounds memory: chunk × n indices at a time
    out = []
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        out.append(np.stack([_macro(np.stack([_resample_auc(idx, *c) for c in classes])) for classes in coded]))
    return np.concatenate(out, axis=1)


def _coded_scores(probs: np.ndarray, labels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Per scored class (binary: class 1): distinct-score codes, positives, number of distinct scores."""
    classes = [1] if probs.shape[1] == 2 else list(range(probs.shape[1]))
    coded = []
    for c in classes:
        _, codes = np.unique(probs[:, c], return_inverse=True)
        coded.append((codes, labels == c, int(codes.max()) + 1))
    return coded


def _resample_auc(idx: np.ndarray, codes: np.ndarray, is_pos: np.ndarray, u: int) -> np.ndarray:
    """One class's AUC on each resample (row of ``idx``), from per-score counts."""
    b = len(idx)
    flat = np.arange(b)[:, None] * u + codes[idx]
    total = np.bincount(flat.ravel(), minlength=b * u).reshape(b, u)
    pos = np.bincount(flat[is_pos[idx]], minlength=b * u).reshape(b, u)
    return _auc_from_counts(pos.astype(np.float64), (total - pos).astype(np.float64))


def _percentile_ci(values: np.ndarray, resamples: int, level: float) -> tuple[float, float] | None:
    """Percentile CI of the usable (non-NaN) resampled values; None when fewer than half are usable."""
    values = values[~np.isnan(values)]
    if len(values) < resamples / 2:
        return None
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def _macro(per_class: np.ndarray) -> np.ndarray:
    """Mean over classes (rows) ignoring NaN (a class absent from a resample); NaN when all are."""
    valid = ~np.isnan(per_class)
    count = valid.sum(axis=0)
    total = np.where(valid, per_class, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


# --------------------------------------------------------------------------- operating point


def sens_spec(pred_pos: np.ndarray, is_pos: np.ndarray) -> tuple[float, float]:
    """Sensitivity (true-positive rate) and specificity (true-negative rate); NaN for an absent class."""
    sens = float(pred_pos[is_pos].mean()) if is_pos.any() else float("nan")
    spec = float((~pred_pos[~is_pos]).mean()) if (~is_pos).any() else float("nan")
    return sens, spec


def youden_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold on P(positive) that maximises sensitivity + specificity − 1 (Youden's J).

    Candidates are the distinct scores (predict positive when score ≥ t); on a tie the lowest
    threshold wins (the more sensitive one). 0.5 when a class is absent.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).astype(bool).reshape(-1)
    if len(scores) == 0 or labels.all() or (~labels).all():
        return 0.5
    cand = np.unique(scores)
    s_pos, s_neg = np.sort(scores[labels]), np.sort(scores[~labels])
    sens = (len(s_pos) - np.searchsorted(s_pos, cand, side="left")) / len(s_pos)
    spec = np.searchsorted(s_neg, cand, side="left") / len(s_neg)
    return float(cand[int(np.argmax(sens + spec - 1))])


def threshold_for_sensitivity(scores: np.ndarray, labels: np.ndarray, sensitivity: float) -> float:
    """The highest threshold on P(positive) whose sensitivity on these cases is ≥ ``sensitivity``.

    With the positives' scores sorted high to low, that is the k-th of them, k = ⌈sensitivity·P⌉
    (at least 1): every higher threshold catches fewer than k positives. 0.5 without positives.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    pos = np.sort(scores[np.asarray(labels).astype(bool).reshape(-1)])[::-1]
    if len(pos) == 0:
        return 0.5
    k = int(np.ceil(sensitivity * len(pos) - 1e-9))
    return float(pos[min(max(k, 1), len(pos)) - 1])


def predict(probs: np.ndarray, threshold: float | None) -> np.ndarray:
    """Predicted class: binary P(class 1) ≥ threshold, multi-class argmax."""
    if probs.shape[1] == 2 and threshold is not None:
        return (probs[:, 1] >= threshold).astype(np.int64)
    return probs.argmax(axis=1)


# --------------------------------------------------------------------------- calibration


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE (Guo et al. 2017): confidence = the top softmax probability, in ``bins`` equal-width bins
    (lo, hi]; the mean |accuracy − confidence| of each bin weighted by its share of the cases."""
    labels = np.asarray(labels).reshape(-1)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    gap = np.abs(np.bincount(b, correct, minlength=bins) - np.bincount(b, conf, minlength=bins))
    return float(gap.sum() / max(len(labels), 1))


# --------------------------------------------------------------------------- one model's figures


@dataclass
class Metrics:
    accuracy: float
    auc: float
    sensitivity: float
    specificity: float
    threshold: float | None  # P(positive) threshold (binary); None for multi-class argmax
    auc_ci: tuple[float, float] | None = None  # percentile bootstrap CI of the test AUC
    ece: float | None = None  # expected calibration error on test (top-label, 15 bins)
    operating_point: str = "youden"  # how the threshold was chosen: youden | teacher-sensitivity | default-0.5 | argmax
    val_sensitivity: float | None = None  # on val: binary at the threshold, multi-class macro at argmax
    val_auc: float | None = None  # on val, as ``auc`` (what the shipping choice is made on)
    per_class: list[dict] | None = None  # multi-class: {class, n, auc, sensitivity, specificity} per class
    test_probs: np.ndarray | None = field(default=None, repr=False, compare=False)  # kept in memory, never written

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "test_probs"}
        d["auc_ci"] = list(self.auc_ci) if self.auc_ci is not None else None
        return d


def per_class_figures(probs: np.ndarray, labels: np.ndarray) -> list[dict]:
    """One-vs-rest AUC and sensitivity/specificity at the argmax decision, for each class."""
    pred = probs.argmax(axis=1)
    out = []
    for c in range(probs.shape[1]):
        is_c = labels == c
        sens, spec = sens_spec(pred == c, is_c)
        out.append({"class": c, "n": int(is_c.sum()), "auc": binary_auc(probs[:, c], is_c),
                    "sensitivity": sens, "specificity": spec})
    return out


def evaluate_logits(
    test_logits: np.ndarray,
    test_labels: np.ndarray,
    val_logits: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    *,
    operating_point: str = "youden",
    target_sensitivity: float | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> Metrics:
    """All figures on test; the binary operating point is chosen on val, and val AUC and val
    sensitivity (binary: at that threshold; multi-class: macro at argmax) are kept for the
    shipping choice.

    ``operating_point="teacher-sensitivity"`` with a ``target_sensitivity`` (the teacher's val
    sensitivity) picks the highest val threshold reaching it; otherwise Youden's J on val. Without
    val the threshold is 0.5. ``resamples`` bootstrap resamples (seeded) give ``auc_ci``.
    """
    if operating_point not in OPERATING_POINTS:
        from ..errors import InputError

        raise InputError(f"operating point '{operating_point}' is not one of {', '.join(OPERATING_POINTS)}")
    test_labels = np.asarray(test_labels).reshape(-1)
    probs = softmax(np.asarray(test_logits, dtype=np.float64))
    common = dict(auc=auc_of_probs(probs, test_labels), ece=expected_calibration_error(probs, test_labels),
                  auc_ci=bootstrap_auc_ci(probs, test_labels, resamples=resamples, seed=seed),
                  test_probs=probs)
    val = None
    if val_logits is not None and val_labels is not None:
        val = softmax(np.asarray(val_logits, dtype=np.float64)), np.asarray(val_labels).reshape(-1)
        common["val_auc"] = auc_of_probs(*val)
    if probs.shape[1] == 2:
        thr, how, val_sens = 0.5, "default-0.5", None
        if val is not None:
            vp, v_pos = val[0][:, 1], val[1] == 1
            if operating_point == "teacher-sensitivity" and target_sensitivity is not None:
                thr, how = threshold_for_sensitivity(vp, v_pos, target_sensitivity), "teacher-sensitivity"
            else:
                thr, how = youden_threshold(vp, v_pos), "youden"
            val_sens = sens_spec(vp >= thr, v_pos)[0]
        pred = predict(probs, thr)
        sens, spec = sens_spec(pred == 1, test_labels == 1)
        return Metrics(float((pred == test_labels).mean()), sensitivity=sens, specificity=spec, threshold=thr,
                       operating_point=how, val_sensitivity=val_sens, **common)
    pred = probs.argmax(axis=1)
    per_class = per_class_figures(probs, test_labels)
    sens, spec = macro_sens_spec(per_class)
    val_sens = macro_sens_spec(per_class_figures(*val))[0] if val is not None else None
    return Metrics(float((pred == test_labels).mean()), sensitivity=sens, specificity=spec, threshold=None,
                   operating_point="argmax", val_sensitivity=val_sens, per_class=per_class, **common)


def macro_sens_spec(per_class: list[dict]) -> tuple[float, float]:
    """Macro sensitivity and specificity over the classes present (per_class_figures rows)."""
    sens = [p["sensitivity"] for p in per_class if not np.isnan(p["sensitivity"])]
    spec = [p["specificity"] for p in per_class if not np.isnan(p["specificity"])]
    return (float(np.mean(sens)) if sens else float("nan")), (float(np.mean(spec)) if spec else float("nan"))
