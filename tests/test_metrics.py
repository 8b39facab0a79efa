"""Clinical metrics against hand-computed cases and scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from edgekd.metrics.classification import (
    binary_auc,
    evaluate_logits,
    roc_auc,
    softmax,
    youden_threshold,
)


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


# --------------------------------------------------------------------------- operating point

from scipy.stats import norm  # noqa: E402  (scikit-learn's own dependency)
from sklearn.metrics import recall_score, roc_curve  # noqa: E402

from edgekd.metrics.classification import (  # noqa: E402
    bootstrap_auc_ci,
    expected_calibration_error,
    per_class_figures,
    threshold_for_sensitivity,
)


def to_logits(p):
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-9, 1 - 1e-9)
    return np.log(np.stack([1 - p, p], axis=1))


@pytest.mark.parametrize("seed", range(4))
def test_youden_threshold_is_the_brute_force_maximum(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 120).astype(bool)
    scores = np.round(rng.random(120) + labels * 0.3, 2)
    best_t, best_j = None, -np.inf
    for t in np.unique(scores):  # ascending: the first maximum is the lowest threshold
        pred = scores >= t
        j = (pred & labels).sum() / labels.sum() + (~pred & ~labels).sum() / (~labels).sum() - 1
        if j > best_j:
            best_t, best_j = t, j
    assert youden_threshold(scores, labels) == best_t


def test_threshold_for_sensitivity_hand_computed():
    scores = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.2])
    labels = np.array([1, 1, 1, 1, 0, 0])
    assert threshold_for_sensitivity(scores, labels, 0.75) == pytest.approx(0.6)  # 3 of 4 positives >= 0.6
    assert threshold_for_sensitivity(scores, labels, 0.5) == pytest.approx(0.8)
    assert threshold_for_sensitivity(scores, labels, 0.51) == pytest.approx(0.6)  # 0.8 would give only 2/4
    assert threshold_for_sensitivity(scores, labels, 1.0) == pytest.approx(0.3)


def test_teacher_sensitivity_operating_point_holds_the_teachers_val_sensitivity():
    rng = np.random.default_rng(3)
    val_y, test_y = rng.integers(0, 2, 400), rng.integers(0, 2, 400)
    teacher_val, teacher_test = [rng.random(400) * 0.6 + y * 0.4 for y in (val_y, test_y)]
    student_val, student_test = [rng.random(400) * 0.8 + y * 0.2 for y in (val_y, test_y)]
    teacher = evaluate_logits(to_logits(teacher_test), test_y, to_logits(teacher_val), val_y,
                              operating_point="teacher-sensitivity")
    assert teacher.operating_point == "youden"  # the teacher itself: Youden's J
    assert teacher.threshold == pytest.approx(youden_threshold(teacher_val, val_y == 1), abs=1e-9)
    student = evaluate_logits(to_logits(student_test), test_y, to_logits(student_val), val_y,
                              operating_point="teacher-sensitivity", target_sensitivity=teacher.val_sensitivity)
    assert student.operating_point == "teacher-sensitivity"
    assert student.val_sensitivity >= teacher.val_sensitivity
    higher = student_val[(val_y == 1) & (student_val > student.threshold + 1e-9)]  # any higher threshold misses more
    assert higher.size / (val_y == 1).sum() < teacher.val_sensitivity
    youden = evaluate_logits(to_logits(student_test), test_y, to_logits(student_val), val_y, operating_point="youden",
                             target_sensitivity=teacher.val_sensitivity)
    assert youden.operating_point == "youden"
    assert youden.threshold == pytest.approx(youden_threshold(student_val, val_y == 1), abs=1e-9)


def test_an_unknown_operating_point_is_a_user_error():
    from edgekd.errors import InputError

    with pytest.raises(InputError, match="teacher-sensitivity, youden"):
        evaluate_logits(to_logits([0.2, 0.8]), [0, 1], operating_point="f1")


# --------------------------------------------------------------------------- calibration, per class


def test_ece_hand_computed():
    # confidences 0.9, 0.9 (one right) and 0.6, 0.6 (both right): 0.5·|0.5 − 0.9| + 0.5·|1 − 0.6| = 0.4
    probs = np.array([[0.1, 0.9], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([1, 1, 0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)


def test_ece_of_a_calibrated_model_is_small_and_of_an_overconfident_one_large():
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)  # P(y=1) really is p
    assert expected_calibration_error(np.stack([1 - p, p], 1), y) < 0.02
    sharp = np.where(p > 0.5, 0.999, 0.001)  # same decisions, claimed certain
    assert expected_calibration_error(np.stack([1 - sharp, sharp], 1), y) > 0.2


def test_per_class_figures_match_sklearn():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 300)
    probs = softmax(rng.normal(size=(300, 3)) + np.eye(3)[labels])
    pc = per_class_figures(probs, labels)
    recalls = recall_score(labels, probs.argmax(1), average=None)
    for c in range(3):
        assert pc[c]["n"] == (labels == c).sum()
        assert pc[c]["sensitivity"] == pytest.approx(recalls[c])
        assert pc[c]["auc"] == pytest.approx(roc_auc_score(labels == c, probs[:, c]))
        spec = ((probs.argmax(1) != c) & (labels != c)).sum() / (labels != c).sum()
        assert pc[c]["specificity"] == pytest.approx(spec)
    m = evaluate_logits(np.log(probs), labels)
    assert m.per_class == pc and m.operating_point == "argmax"


# --------------------------------------------------------------------------- bootstrap


def test_each_bootstrap_resample_auc_equals_the_direct_auc_of_that_resample():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    scores = np.round(rng.random(50) + labels * 0.3, 1)
    probs = np.stack([1 - scores / 2, scores / 2], 1)
    lo, hi = bootstrap_auc_ci(probs, labels, resamples=3, seed=7, level=0.0)  # level 0: both ends = the median
    idx = np.random.default_rng(7).integers(0, 50, size=(3, 50))  # the same draws
    direct = [binary_auc(scores[i], labels[i]) for i in idx]
    assert lo == pytest.approx(np.median(direct)) and hi == pytest.approx(np.median(direct))


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, 300)
    probs = softmax(rng.normal(size=(300, 4)) + np.eye(4)[labels])
    a = bootstrap_auc_ci(probs, labels, seed=1)
    assert a == bootstrap_auc_ci(probs, labels, seed=1) and a != bootstrap_auc_ci(probs, labels, seed=2)
    assert a[0] < roc_auc(np.log(probs), labels) < a[1]
    assert bootstrap_auc_ci(probs, labels, resamples=0) is None


def test_bootstrap_95_ci_covers_the_true_auc_about_95_percent_of_the_time():
    # binormal model: negatives N(0,1), positives N(d,1) -> true AUC = Phi(d / sqrt 2)
    d, n, trials = 1.0, 150, 300
    true_auc = norm.cdf(d / np.sqrt(2))
    rng = np.random.default_rng(0)
    hits = 0
    for t in range(trials):
        labels = np.r_[np.zeros(n), np.ones(n)].astype(int)
        scores = rng.normal(size=2 * n) + d * labels
        p = 1 / (1 + np.exp(-scores))
        lo, hi = bootstrap_auc_ci(np.stack([1 - p, p], 1), labels, resamples=400, seed=t)
        hits += lo <= true_auc <= hi
    assert 0.90 <= hits / trials <= 0.99  # 95 % nominal; 300 trials give about ±2.5 %


def test_auc_ci_is_reported_in_the_metrics():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200)
    p = np.clip(rng.random(200) * 0.7 + y * 0.3, 0.01, 0.99)
    m = evaluate_logits(to_logits(p), y, resamples=500, seed=3)
    assert m.auc_ci[0] < m.auc < m.auc_ci[1]
    d = m.to_dict()
    assert "test_probs" not in d and d["auc_ci"] == list(m.auc_ci)


# --------------------------------------------------------------------------- report-level figures

from edgekd.metrics.classification import Metrics  # noqa: E402
from edgekd.report.clinical import disagreements, pareto_front, roc_points, waterfall  # noqa: E402


def test_roc_points_trace_sklearns_curve_and_are_capped():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 3000)
    s = rng.random(3000) + y * 0.4
    probs = np.stack([1 - s / 2, s / 2], 1)
    full = roc_points(probs, y, max_points=100000)
    fpr, tpr, _ = roc_curve(y, s)
    assert np.trapezoid(full["tpr"], full["fpr"]) == pytest.approx(np.trapezoid(tpr, fpr), abs=1e-5)
    assert np.trapezoid(full["tpr"], full["fpr"]) == pytest.approx(binary_auc(s, y), abs=1e-5)
    small = roc_points(probs, y, max_points=50)
    assert len(small["fpr"]) <= 50 and small["fpr"][0] == 0 and small["tpr"][-1] == 1 and small["fpr"][-1] == 1


def _m(p, thr):
    p = np.asarray(p, dtype=np.float32)
    return Metrics(0, 0, 0, 0, thr, test_probs=np.stack([1 - p, p], 1))


def test_disagreements_list_the_cases_largest_gap_first_and_are_capped():
    teacher = _m([0.9, 0.2, 0.6, 0.1, 0.8], 0.5)
    model = _m([0.3, 0.7, 0.55, 0.05, 0.45], 0.5)  # differs on cases 0 (gap .6), 1 (.5), 4 (.35)
    d = disagreements(teacher, model, np.array([1, 0, 1, 0, 1]), cap=2)
    assert d["n"] == 5 and d["disagreements_total"] == 3 and d["agreement"] == pytest.approx(0.4)
    assert [c["index"] for c in d["cases"]] == [0, 1]
    assert d["cases"][0] == {"index": 0, "label": 1, "teacher_pred": 1, "teacher_prob": pytest.approx(0.9),
                             "model_pred": 0, "model_prob": pytest.approx(0.3)}


def test_each_model_is_compared_at_its_own_operating_point():
    teacher, model = _m([0.6, 0.4], 0.5), _m([0.35, 0.2], 0.3)  # both say (positive, negative)
    assert disagreements(teacher, model, np.array([1, 0]))["disagreements_total"] == 0


def cd(name, p50, auc, stage="lower", source=None):
    return {"name": name, "stage": stage, "source": source, "latency_ms": None if p50 is None else {"p50": p50},
            "metrics": {"auc": auc}}


def test_pareto_front_keeps_only_undominated_candidates():
    cands = [cd("slow-best", 10, 0.95), cd("fast-good", 1, 0.93), cd("dominated", 2, 0.92),
             cd("fastest-worst", 0.5, 0.80), cd("tie-slower", 1.5, 0.93), cd("untimed", None, 0.99)]
    assert pareto_front(cands) == ["slow-best", "fast-good", "fastest-worst"]


def test_waterfall_follows_the_shipped_models_ancestry():
    cands = [cd("teacher-x", 5, 0.95, "teacher"), cd("student-distilled", 3, 0.94, "distill"),
             cd("student-pruned", 2, 0.93, "prune"), cd("student-int8-qat", None, 0.92, "quantize"),
             cd("student-int8-onnxruntime", 1, 0.92, source="student-int8-qat"),
             cd("student-fp32-onnxruntime", 1.5, 0.93, source="student-pruned")]
    assert waterfall(cands, "teacher-x", "student-int8-onnxruntime") == [
        "teacher-x", "student-distilled", "student-pruned", "student-int8-qat", "student-int8-onnxruntime"]
    assert waterfall(cands, "teacher-x", "student-fp32-onnxruntime")[-2:] == ["student-pruned", "student-fp32-onnxruntime"]
    assert waterfall(cands, "teacher-x", None)[-1] == "student-int8-qat"


# --------------------------------------------------------------------------- the shipping rule's sensitivity budget

from types import SimpleNamespace as NS  # noqa: E402

from edgekd.errors import InputError, TargetError  # noqa: E402
from edgekd.measure.candidates import Candidate  # noqa: E402
from edgekd.ship import choose_shipped  # noqa: E402
from edgekd.targets import load_target, parse_profile, shipping_budget  # noqa: E402


def cand(name, auc, sens, p50):
    """A student with the same figures on val and test (the choice is on val, the confirmation on test)."""
    c = Candidate(name, "lower", "openvino", "int8", "student", runner=None)
    c.metrics = NS(auc=auc, sensitivity=sens, val_auc=auc, val_sensitivity=sens)
    c.latency = NS(p50=p50)
    return c


def teacher(auc, sens):
    return NS(auc=auc, sensitivity=sens, val_auc=auc, val_sensitivity=sens)


def test_a_model_losing_more_sensitivity_than_the_budget_is_not_shipped_even_inside_the_auc_budget():
    cands = [cand("fast-misses-cases", 0.948, 0.85, 0.1), cand("slower-keeps-sensitivity", 0.945, 0.89, 0.3)]
    shipped, info = choose_shipped(cands, load_target("intel-cpu"), teacher(0.95, 0.90), 0.01,
                                   max_sensitivity_drop=0.02)
    assert shipped.name == "slower-keeps-sensitivity"
    assert info["rejected_for_sensitivity"] == ["fast-misses-cases"]
    assert info["min_val_sensitivity"] == pytest.approx(0.88) and info["min_sensitivity"] == pytest.approx(0.88)
    assert "val sensitivity 0.8900 (teacher 0.9000, floor 0.8800)" in info["reason"]


def test_nothing_ships_when_every_model_inside_the_auc_budget_misses_too_many_cases():
    shipped, info = choose_shipped([cand("a", 0.95, 0.80, 0.1)], load_target("intel-cpu"), teacher(0.95, 0.90), 0.01,
                                   max_sensitivity_drop=0.02)
    assert shipped is None
    assert info["reason"].startswith("no openvino candidate kept val sensitivity >= 0.8800 (teacher 0.9000)")
    assert "best inside the val AUC budget was a at sensitivity 0.8000" in info["reason"]


def test_the_sensitivity_edge_is_inclusive():
    shipped, _ = choose_shipped([cand("edge", 0.95, 0.875, 0.1)], load_target("intel-cpu"),
                                teacher(0.95, 0.875 + 0.0625), 0.01, max_sensitivity_drop=0.0625)  # exact in binary
    assert shipped is not None


def test_budgets_come_from_the_profile_and_options_override_them():
    profile = load_target("intel-cpu")
    b = shipping_budget(profile)
    assert (b.max_auc_drop, b.max_sensitivity_drop) == (profile.max_auc_drop, profile.max_sensitivity_drop)
    assert b.source == {"max_auc_drop": "profile", "max_sensitivity_drop": "profile", "max_dice_drop": "profile",
                        "max_robust_drop": "profile"}
    b = shipping_budget(profile, max_sensitivity_drop=0.05)
    assert b.max_sensitivity_drop == 0.05 and b.source["max_sensitivity_drop"] == "option"
    assert b.max_auc_drop == profile.max_auc_drop
    with pytest.raises(InputError, match="--max-sensitivity-drop 2 must be in"):
        shipping_budget(profile, max_sensitivity_drop=2)


def test_every_bundled_profile_sets_both_budgets_and_bad_ones_are_rejected():
    from edgekd.targets import list_targets

    for name in list_targets():
        text = (load_target(name).source and open(load_target(name).source).read())
        assert "max_auc_drop:" in text and "max_sensitivity_drop:" in text, name
    with pytest.raises(TargetError, match="'max_sensitivity_drop' is 'a lot'"):
        parse_profile("name: x\nruntime: openvino\nprecisions: [fp32]\nmax_sensitivity_drop: a lot\n")
    p = parse_profile("name: x\nruntime: openvino\nprecisions: [fp32]\nmax_sensitivity_drop: 0.05\n")
    assert p.max_sensitivity_drop == 0.05


def test_a_bad_budget_on_the_command_line_fails_at_once_with_one_line(tmp_path):
    from typer.testing import CliRunner

    from edgekd.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["compress", "--target", "intel-cpu", "--max-sensitivity-drop", "5", "--out", str(out)])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: --max-sensitivity-drop 5.0 must be in [-1, 1] "
                                     "(e.g. 0.01; negative: must beat the teacher)")
    assert not out.exists()
