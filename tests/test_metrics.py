"""Clinical metrics against hand-computed cases and scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from edgekd.bench.metrics import binary_auc, evaluate_logits, roc_auc, softmax, youden_threshold


def test_auc_of_a_hand_computed_case():
    # positives score 0.8, 0.4; negatives 0.6, 0.2 -> pairs (pos > neg): (0.8>0.6)(0.8>0.2)(0.4>0.2) = 3/4
    assert binary_auc(np.array([0.8, 0.4, 0.6, 0.2]), np.array([1, 1, 0, 0])) == pytest.approx(0.75)


def test_ties_count_half():
    assert binary_auc(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + labels * 0.3, 1)  # rounding makes many ties
    assert binary_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))


def test_multiclass_auc_is_macro_one_vs_rest_like_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 400)
    logits = rng.normal(size=(400, 4)) + np.eye(4)[labels] * 1.5
    expected = roc_auc_score(labels, softmax(logits), multi_class="ovr", average="macro")
    assert roc_auc(logits, labels) == pytest.approx(expected)


def test_auc_with_one_class_only_is_nan():
    assert np.isnan(binary_auc(np.array([0.1, 0.9]), np.array([1, 1])))


def test_youden_threshold_separates_a_separable_case():
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    labels = np.array([0, 0, 0, 1, 1, 1])
    t = youden_threshold(scores, labels)
    assert 0.3 < t <= 0.7


def test_sensitivity_and_specificity_use_the_val_threshold():
    # val puts the operating point at P(pos) >= 0.7; on test that gives 2/3 sensitivity, 3/3 specificity
    val_p = np.array([0.1, 0.2, 0.65, 0.7, 0.8, 0.9])
    val_y = np.array([0, 0, 0, 1, 1, 1])
    test_p = np.array([0.1, 0.3, 0.6, 0.65, 0.75, 0.95])
    test_y = np.array([0, 0, 0, 1, 1, 1])
    to_logits = lambda p: np.log(np.stack([1 - p, p], axis=1))  # noqa: E731
    m = evaluate_logits(to_logits(test_p), test_y, to_logits(val_p), val_y)
    assert m.threshold == pytest.approx(0.7)
    assert m.sensitivity == pytest.approx(2 / 3)
    assert m.specificity == pytest.approx(1.0)
    assert m.accuracy == pytest.approx(5 / 6)
    assert m.auc == pytest.approx(roc_auc_score(test_y, test_p))


def test_multiclass_figures_are_macro_averages():
    labels = np.array([0, 0, 1, 1, 2, 2])
    logits = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 5.0
    m = evaluate_logits(logits, labels)
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.sensitivity == pytest.approx(np.mean([1 / 2, 2 / 2, 1 / 2]))
    assert m.threshold is None
