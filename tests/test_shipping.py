"""The shipping decision: chosen on val, confirmed once on test, compared with the teacher by a
paired bootstrap, and shipped with the operating point it was chosen at.

1. Eligible = val AUC ≥ teacher val AUC − max_auc_drop and val sensitivity ≥ teacher val
   sensitivity − max_sensitivity_drop; the fastest eligible one (p50) is chosen.
2. Only the chosen model is then checked on test against the same budgets; when it fails nothing
   ships (exit 3) and no other candidate is tried on test.
3. Student − teacher test AUC with a paired 95 % bootstrap CI (same resamples for both models);
   non-inferior when the CI's lower bound is above −max_auc_drop.
4. The binary threshold chosen on val goes into the bundle's labels.json, and the device runner
   uses it unless --threshold is given.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest

from edgekd.errors import EXIT_NOT_SHIPPED
from edgekd.measure.candidates import Candidate
from edgekd.metrics.classification import (
    auc_of_probs,
    bootstrap_auc_ci,
    evaluate_logits,
    paired_auc_diff,
    roc_auc,
    softmax,
)
from edgekd.report.clinical import non_inferiority_text, vs_teacher
from edgekd.ship import choose_shipped, not_shipped
from edgekd.targets import load_target

from .test_bundle import make_bundle
from .test_device_runner import clean_env


def cand(name, p50, *, val_auc, test_auc, val_sens=0.9, test_sens=0.9, precision="int8"):
    c = Candidate(name, "lower", "openvino", precision, "student", runner=None)
    c.metrics = NS(val_auc=val_auc, auc=test_auc, val_sensitivity=val_sens, sensitivity=test_sens)
    c.latency = NS(p50=p50)
    return c


TEACHER = NS(val_auc=0.95, auc=0.96, val_sensitivity=0.90, sensitivity=0.91)  # val and test differ on purpose


def ship(cands, max_drop=0.01, max_sens_drop=0.02, profile="intel-cpu"):
    return choose_shipped(cands, load_target(profile), TEACHER, max_drop, max_sensitivity_drop=max_sens_drop)


# --------------------------------------------------------------------------- 1. chosen on val


def test_a_candidate_best_on_test_but_outside_the_budget_on_val_is_not_chosen():
    lucky_on_test = cand("fast-lucky-on-test", 0.1, val_auc=0.93, test_auc=0.99)  # val 0.93 < 0.95 − 0.01
    honest = cand("slower-inside-on-val", 0.3, val_auc=0.945, test_auc=0.955)
    shipped, info = ship([lucky_on_test, honest])
    assert shipped.name == "slower-inside-on-val"
    assert info["chosen_on"] == "val" and info["eligible"] == ["slower-inside-on-val"]
    assert info["min_val_auc"] == pytest.approx(0.94) and info["teacher_val_auc"] == 0.95
    assert info["val"] == {"auc": 0.945, "sensitivity": 0.9}


def test_the_val_sensitivity_budget_decides_too_and_the_test_sensitivity_does_not():
    misses_on_val = cand("fast-misses-on-val", 0.1, val_auc=0.95, test_auc=0.96, val_sens=0.85, test_sens=0.99)
    keeps = cand("slower-keeps", 0.2, val_auc=0.95, test_auc=0.96, val_sens=0.89, test_sens=0.90)
    shipped, info = ship([misses_on_val, keeps])
    assert shipped.name == "slower-keeps"
    assert info["rejected_for_sensitivity"] == ["fast-misses-on-val"]
    assert info["min_val_sensitivity"] == pytest.approx(0.88)


def test_the_fastest_eligible_on_val_is_chosen_and_its_val_and_test_figures_are_reported():
    shipped, info = ship([cand("slow", 0.3, val_auc=0.95, test_auc=0.96), cand("fast", 0.1, val_auc=0.944, test_auc=0.951)])
    assert shipped.name == "fast" and info["confirmed"] is True
    conf = info["confirmation"]
    assert conf["on"] == "test" and conf["candidate"] == "fast"
    assert (conf["auc"], conf["min_auc"]) == (0.951, pytest.approx(0.95))
    assert conf["min_sensitivity"] == pytest.approx(0.89) and conf["auc_ok"] and conf["sensitivity_ok"]
    assert "eligible on val" in info["reason"] and "confirmed on test" in info["reason"]


def test_device_built_targets_keep_the_profiles_precision_order_on_val():
    profile = load_target("jetson-orin-nano")
    order = list(profile.precisions)
    cands = []
    for prec in reversed(order):
        c = cand(f"student-{prec}-tensorrt", None, val_auc=0.95, test_auc=0.96, precision=prec)
        c.backend, c.latency = "tensorrt", None
        cands.append(c)
    shipped, info = choose_shipped(cands, profile, TEACHER, 0.01, max_sensitivity_drop=0.02)
    assert shipped.precision == order[0] and info["confirmed"]
    assert "preferred precision" in info["reason"] and "eligible on val" in info["reason"]


def test_multi_class_keeps_its_macro_sensitivity_at_argmax_on_val():
    rng = np.random.default_rng(0)
    val_labels, test_labels = rng.integers(0, 3, 90), rng.integers(0, 3, 90)
    val_logits, test_logits = rng.standard_normal((90, 3)), rng.standard_normal((90, 3))
    m = evaluate_logits(test_logits, test_labels, val_logits, val_labels)
    ref = evaluate_logits(val_logits, val_labels)  # the val split scored as if it were test
    assert m.val_auc == pytest.approx(roc_auc(val_logits, val_labels))
    assert m.val_sensitivity == pytest.approx(ref.sensitivity)  # macro one-vs-rest at argmax, as on test
    assert m.threshold is None


def test_binary_val_figures_are_at_the_threshold_chosen_on_val():
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(40, int), np.ones(40, int)]
    logits = np.c_[np.zeros(80), labels + rng.standard_normal(80)]
    m = evaluate_logits(logits[::-1], labels[::-1], logits, labels)
    assert m.val_auc == pytest.approx(roc_auc(logits, labels))
    assert m.val_sensitivity == pytest.approx((softmax(logits)[labels == 1, 1] >= m.threshold).mean())
    assert "val_auc" in m.to_dict()


# --------------------------------------------------------------------------- 2. confirmed once on test


def test_a_val_choice_that_fails_on_test_ships_nothing_and_no_other_candidate_is_tried():
    chosen = cand("fast-fails-on-test", 0.1, val_auc=0.95, test_auc=0.90)  # test floor 0.96 − 0.01 = 0.95
    fine_on_both = cand("slower-fine-on-both", 0.5, val_auc=0.95, test_auc=0.96)
    shipped, info = ship([chosen, fine_on_both])
    assert shipped is None  # never the runner-up by its test figures
    assert info["chosen"] == "fast-fails-on-test" and info["confirmed"] is False
    assert info["confirmation"]["auc_ok"] is False and info["confirmation"]["sensitivity_ok"] is True
    assert "chosen on val" in info["reason"] and "not confirmed on test" in info["reason"]
    assert "slower-fine-on-both" not in info["reason"]


def test_a_failed_test_sensitivity_confirmation_ships_nothing():
    shipped, info = ship([cand("c", 0.1, val_auc=0.95, test_auc=0.96, val_sens=0.9, test_sens=0.80)])
    assert shipped is None and info["confirmation"]["sensitivity_ok"] is False
    assert "test sensitivity 0.8000 (teacher 0.9100, floor 0.8900)" in info["reason"]


def test_not_confirmed_is_a_one_line_exit_3_error_naming_val_and_test(tmp_path):
    _, info = ship([cand("c", 0.1, val_auc=0.95, test_auc=0.90)])
    err = not_shipped(info, tmp_path / "out")
    assert err.exit_code == EXIT_NOT_SHIPPED
    text = str(err)
    assert "\n" not in text and text.startswith("nothing shipped: c was chosen on val")
    assert "not confirmed on test" in text and str(tmp_path / "out") in text


def test_nothing_eligible_on_val_is_reported_on_val():
    shipped, info = ship([cand("c", 0.1, val_auc=0.80, test_auc=0.99)])
    assert shipped is None and info["confirmation"] is None and info["chosen"] is None
    assert info["reason"].startswith("no openvino candidate reached val AUC 0.9400")


def test_the_confirmation_edge_is_inclusive():
    exact = NS(val_auc=0.875, auc=0.875, val_sensitivity=0.75, sensitivity=0.75)  # exact in binary
    c = cand("edge", 0.1, val_auc=0.75, test_auc=0.75, val_sens=0.5, test_sens=0.5)
    shipped, _ = choose_shipped([c], load_target("intel-cpu"), exact, 0.125, max_sensitivity_drop=0.25)
    assert shipped is not None


# --------------------------------------------------------------------------- 3. paired CI vs the teacher


def binary_probs(scores):
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    return np.c_[1 - s, s]


@pytest.fixture
def binary_case():
    rng = np.random.default_rng(2)
    labels = np.r_[np.zeros(150, int), np.ones(150, int)]
    weak = binary_probs(0.5 + 0.15 * (labels - 0.5) + 0.25 * rng.standard_normal(300))
    strong = binary_probs(0.5 + 0.6 * (labels - 0.5) + 0.1 * rng.standard_normal(300))
    return labels, weak, strong


def test_identical_models_differ_by_exactly_zero_with_a_zero_width_ci(binary_case):
    labels, weak, _ = binary_case
    d = paired_auc_diff(weak, weak.copy(), labels, resamples=200, seed=0)
    assert d.auc_diff == 0.0 and d.ci == (0.0, 0.0)


def test_a_clearly_better_model_has_its_whole_ci_above_zero(binary_case):
    labels, weak, strong = binary_case
    d = paired_auc_diff(strong, weak, labels, resamples=500, seed=0)
    assert d.auc_diff == pytest.approx(auc_of_probs(strong, labels) - auc_of_probs(weak, labels))
    assert 0 < d.ci[0] <= d.auc_diff <= d.ci[1]
    worse = paired_auc_diff(weak, strong, labels, resamples=500, seed=0)
    assert worse.ci == pytest.approx((-d.ci[1], -d.ci[0]))  # the same resamples, mirrored


def test_the_paired_ci_is_seeded_and_uses_the_same_resamples_as_the_auc_ci(binary_case):
    labels, weak, strong = binary_case
    a = paired_auc_diff(strong, weak, labels, resamples=300, seed=7)
    assert paired_auc_diff(strong, weak, labels, resamples=300, seed=7) == a
    assert paired_auc_diff(strong, weak, labels, resamples=300, seed=8).ci != a.ci
    # paired against a constant score (AUC ½ on every resample) the CI is the model's own AUC CI − ½
    lo, hi = bootstrap_auc_ci(strong, labels, resamples=300, seed=7)
    flat = paired_auc_diff(strong, binary_probs(np.full(300, 0.5)), labels, resamples=300, seed=7)
    assert flat.ci == pytest.approx((lo - 0.5, hi - 0.5))


def test_the_paired_difference_is_macro_one_vs_rest_for_multi_class():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 200)
    a, b = rng.standard_normal((200, 3)) + 2 * np.eye(3)[labels], rng.standard_normal((200, 3))
    d = paired_auc_diff(softmax(a), softmax(b), labels, resamples=200, seed=0)
    assert d.auc_diff == pytest.approx(roc_auc(a, labels) - roc_auc(b, labels))
    assert d.ci[0] > 0


def test_non_inferiority_is_the_lower_bound_above_minus_the_margin(binary_case):
    labels, weak, strong = binary_case
    t, same, worse = (NS(test_probs=p) for p in (strong, strong.copy(), weak))
    ok = vs_teacher(t, same, labels, resamples=200, seed=0, margin=0.01)
    assert ok["non_inferior"] is True and ok["auc_diff_ci95"] == [0.0, 0.0] and ok["margin"] == 0.01
    bad = vs_teacher(t, worse, labels, resamples=200, seed=0, margin=0.01)
    assert bad["non_inferior"] is False and bad["auc_diff_ci95"][0] < -0.01


def test_the_sentence_states_diff_ci_verdict_and_margin():
    v = {"auc_diff": -0.004, "auc_diff_ci95": [-0.012, 0.003], "margin": 0.01, "non_inferior": True}
    assert non_inferiority_text(v) == ("student − teacher test AUC −0.004 (95 % CI −0.012 … +0.003): "
                                       "non-inferior at the 0.01 margin")
    v.update(auc_diff_ci95=[-0.03, 0.01], non_inferior=False)
    assert non_inferiority_text(v).endswith("not shown non-inferior at the 0.01 margin")


def test_report_md_and_html_say_how_it_was_chosen_and_the_paired_verdict():
    from edgekd.report.html import shipping_banner
    from edgekd.report.writer import shipping_markdown

    _, info = ship([cand("c", 0.1, val_auc=0.95, test_auc=0.96)])
    info["non_inferiority"] = {"auc_diff": -0.004, "auc_diff_ci95": [-0.012, 0.003], "margin": 0.01,
                               "non_inferior": True}
    md = "\n".join(shipping_markdown(info))
    assert "chosen on val: `c`; confirmed on test" in md
    assert "`c`: student − teacher test AUC −0.004 (95 % CI −0.012 … +0.003): non-inferior at the 0.01 margin" in md
    html = shipping_banner({"shipped": "c", "shipping": info})
    assert "c: student − teacher test AUC −0.004" in html and "non-inferior at the 0.01 margin" in html


# --------------------------------------------------------------------------- 4. the threshold travels
from .test_bundle import models  # noqa: E402,F401 - the same small ONNX/OpenVINO student (a module fixture)


@pytest.fixture(scope="module")
def bundle(models, tmp_path_factory) -> Path:
    """A fresh bundle whose shipped model was operated at a val threshold of 0.37."""
    metrics = {"auc": 0.9, "threshold": 0.37, "operating_point": "teacher-sensitivity"}
    return make_bundle(models, tmp_path_factory.mktemp("ship-bundle"), "generic-cpu", "onnxruntime", "fp32",
                       "student.onnx", metrics=metrics)


def run_runner(folder: Path, *args: str) -> dict:
    res = subprocess.run([sys.executable, "runner.py", "--model", "model.onnx", "--runtime", "onnxruntime",
                          "--iterations", "3", "--warmup", "0", *args], cwd=folder, env=clean_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout)


def test_labels_json_records_the_threshold_chosen_on_val_and_the_bundle_verifies(bundle):
    from edgekd.bundle.verify import verify_bundle

    labels = json.loads((bundle / "labels.json").read_text())
    assert labels["threshold"] == 0.37 and labels["threshold_chosen_on"] == "val"
    assert labels["operating_point"] == "teacher-sensitivity" and labels["decision"] == "threshold"
    assert "--threshold" not in (bundle / "README.txt").read_text()  # the runner reads labels.json itself
    res = verify_bundle(bundle)
    assert res.ok, [p.line() for p in res.problems]


def test_the_runner_uses_the_bundles_threshold_by_default_and_says_so(bundle):
    doc = run_runner(bundle)
    assert doc["threshold"]["value"] == 0.37 and doc["threshold"]["source"].startswith("labels.json")
    assert doc["threshold"]["path"] == str((bundle / "labels.json").resolve())
    assert doc["metrics"]["threshold"] == 0.37
    with np.load(bundle / "sample.npz") as s:
        labels = s["labels"]
    expected = np.load(bundle / "expected_logits.npy")
    pred = (softmax(expected.astype(np.float64))[:, 1] >= 0.37).astype(int)
    assert doc["metrics"]["accuracy"] == pytest.approx((pred == labels).mean(), abs=1e-9)


def test_threshold_on_the_command_line_overrides_the_bundle(bundle):
    doc = run_runner(bundle, "--threshold", "0.8")
    assert doc["threshold"] == {"value": 0.8, "source": "--threshold", "path": None}
    assert doc["metrics"]["threshold"] == 0.8


def test_without_a_recorded_threshold_the_runner_falls_back_to_one_half(bundle, tmp_path):
    import shutil

    bare = Path(shutil.copytree(bundle, tmp_path / "bare"))
    (bare / "labels.json").unlink()
    doc = run_runner(bare)
    assert doc["threshold"]["value"] == 0.5 and doc["threshold"]["source"].startswith("default 0.5")


def test_an_unreadable_labels_json_is_a_one_line_runner_error(bundle, tmp_path):
    import shutil

    broken = Path(shutil.copytree(bundle, tmp_path / "broken"))
    (broken / "labels.json").write_text("{ truncated")
    res = subprocess.run([sys.executable, "runner.py", "--model", "model.onnx", "--runtime", "onnxruntime",
                          "--iterations", "1", "--warmup", "0"], cwd=broken, env=clean_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "labels.json is not readable JSON" in errors[0]
