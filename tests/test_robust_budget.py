"""The robustness budget ``max_robust_drop``: off by default; when set, a student whose mean drop
under shift exceeds the teacher's by more than it is not chosen on val, and the chosen one must keep
it on test too (else nothing ships); bad values fail with one line, from the profile, the option
and the command line alike."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace as NS

import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.errors import InputError, TargetError
from edgekd.measure.candidates import Candidate
from edgekd.ship import choose_shipped
from edgekd.targets import list_targets, load_target, parse_profile, shipping_budget

TEACHER = NS(val_auc=0.95, auc=0.96, val_sensitivity=0.90, sensitivity=0.91)
TEACHER_ROBUST = {"val": NS(mean_drop=0.030), "test": NS(mean_drop=0.040)}  # what ship reads: Robustness.mean_drop


def cand(name, p50, val_drop, test_drop, *, val_auc=0.95, test_auc=0.96):
    c = Candidate(name, "lower", "openvino", "int8", "student", runner=None)
    c.metrics = NS(val_auc=val_auc, auc=test_auc, val_sensitivity=0.9, sensitivity=0.91)
    c.latency = NS(p50=p50)
    c.robustness = None if val_drop is None else {"val": NS(mean_drop=val_drop), "test": NS(mean_drop=test_drop)}
    return c


def ship(cands, max_robust_drop, teacher_robustness=TEACHER_ROBUST):
    return choose_shipped(cands, load_target("intel-cpu"), TEACHER, 0.01, max_sensitivity_drop=0.02,
                          max_robust_drop=max_robust_drop, teacher_robustness=teacher_robustness)


# --------------------------------------------------------------------------- the rule


def test_off_by_default_the_fastest_ships_however_fragile():
    fragile, sturdy = cand("fast-fragile", 0.1, 0.30, 0.30), cand("slow-sturdy", 0.3, 0.03, 0.04)
    shipped, info = ship([fragile, sturdy], None)
    assert shipped.name == "fast-fragile"
    assert info["max_robust_drop"] is None and info["rejected_for_robustness"] == []
    assert "shift" not in info["rule"] and "robust_ok" not in info["confirmation"]
    assert load_target("intel-cpu").max_robust_drop is None and shipping_budget(load_target("intel-cpu")).max_robust_drop is None


def test_a_student_losing_more_under_shift_than_the_budget_on_val_is_not_chosen():
    fragile, sturdy = cand("fast-fragile", 0.1, 0.06, 0.02), cand("slow-sturdy", 0.3, 0.045, 0.05)
    shipped, info = ship([fragile, sturdy], 0.02)  # val ceiling 0.03 + 0.02 = 0.05
    assert shipped.name == "slow-sturdy" and info["confirmed"]
    assert info["rejected_for_robustness"] == ["fast-fragile"] and info["rejected_for_sensitivity"] == []
    assert info["eligible"] == ["slow-sturdy"]
    assert info["max_val_robust_mean_drop"] == pytest.approx(0.05) and info["max_robust_mean_drop"] == pytest.approx(0.06)
    assert "val mean drop under shift <= teacher's val mean drop + 0.02" in info["rule"]
    assert "val mean drop under shift +0.0450 (teacher +0.0300, ceiling +0.0500)" in info["reason"]
    conf = info["confirmation"]
    assert conf["robust_mean_drop"] == 0.05 and conf["max_robust_mean_drop"] == pytest.approx(0.06) and conf["robust_ok"]


def test_the_ceiling_is_inclusive():
    edge = cand("edge", 0.1, 0.03 + 0.0625, 0.04 + 0.0625)
    shipped, _ = ship([edge], 0.0625, {"val": NS(mean_drop=0.03), "test": NS(mean_drop=0.04)})
    assert shipped is not None


def test_nothing_ships_when_every_student_inside_the_other_budgets_is_too_fragile():
    shipped, info = ship([cand("a", 0.1, 0.09, 0.09), cand("b", 0.2, 0.08, 0.08)], 0.02)
    assert shipped is None and info["rejected_for_robustness"] == ["a", "b"]
    assert info["reason"].startswith("no openvino candidate inside the AUC and sensitivity budgets kept its val mean "
                                     "drop under shift <= +0.0500 (teacher +0.0300 + 0.02); best was b")


def test_the_test_confirmation_includes_robustness_and_no_other_candidate_is_tried():
    chosen_on_val = cand("fast", 0.1, 0.04, 0.09)  # inside on val (0.05), outside on test (0.06)
    runner_up = cand("slow", 0.3, 0.04, 0.04)
    shipped, info = ship([chosen_on_val, runner_up], 0.02)
    assert shipped is None and info["chosen"] == "fast" and not info["confirmed"]
    conf = info["confirmation"]
    assert conf["auc_ok"] and conf["sensitivity_ok"] and not conf["robust_ok"] and not conf["confirmed"]
    assert "not confirmed on test" in info["reason"] and "test mean drop under shift +0.0900" in info["reason"]


def test_a_student_not_measured_under_shift_is_not_shown_robust():
    shipped, info = ship([cand("unmeasured", 0.1, None, None), cand("measured", 0.3, 0.03, 0.04)], 0.02)
    assert shipped.name == "measured" and info["rejected_for_robustness"] == ["unmeasured"]
    shipped, info = ship([cand("measured", 0.3, 0.03, 0.04)], 0.02, teacher_robustness=None)  # no teacher figure
    assert shipped is None and "not measured" not in info["reason"] and "teacher +nan" in info["reason"]


def test_a_negative_budget_demands_a_more_robust_student_than_the_teacher():
    as_robust = cand("as-robust", 0.1, 0.03, 0.04)
    assert ship([as_robust], 0.0)[0] is not None
    assert ship([as_robust], -0.01)[0] is None


# --------------------------------------------------------------------------- where the budget comes from


def test_the_option_overrides_the_profile_and_the_source_says_which():
    profile = load_target("intel-cpu")
    b = shipping_budget(profile)
    assert b.max_robust_drop is None and b.source["max_robust_drop"] == "profile"
    b = shipping_budget(profile, max_robust_drop=0.02)
    assert b.max_robust_drop == 0.02 and b.source["max_robust_drop"] == "option"
    p = parse_profile("name: x\nruntime: openvino\nprecisions: [fp32]\nmax_robust_drop: 0.03\n")
    assert p.max_robust_drop == 0.03 and shipping_budget(p).max_robust_drop == 0.03
    assert parse_profile("name: x\nruntime: openvino\nprecisions: [fp32]\nmax_robust_drop: null\n").max_robust_drop is None


@pytest.mark.parametrize("value", [2, -1.5, float("nan"), float("inf"), "0.02", True])
def test_bad_option_values_fail_with_one_line(value):
    with pytest.raises(InputError, match=r"--max-robust-drop .* must be in \[-1, 1\]") as e:
        shipping_budget(load_target("intel-cpu"), max_robust_drop=value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text", ["a lot", "2", "[0.1]", "true"])
def test_bad_profile_values_fail_with_the_key(text):
    with pytest.raises(TargetError, match="'max_robust_drop' is .* expected null \\(off\\) or a number in \\[-1, 1\\]"):
        parse_profile(f"name: x\nruntime: openvino\nprecisions: [fp32]\nmax_robust_drop: {text}\n")


def test_every_bundled_profile_states_the_budget_and_leaves_it_off():
    for name in list_targets():
        profile = load_target(name)
        assert "max_robust_drop:" in Path(profile.source).read_text(), name
        assert profile.max_robust_drop is None, name


def test_the_command_line_rejects_a_bad_budget_in_one_line_before_any_work(tmp_path):
    result = CliRunner().invoke(app, ["compress", "--max-robust-drop", "5", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: --max-robust-drop 5.0 must be in [-1, 1] (e.g. 0.01; negative: must beat "
                                     "the teacher)")
    assert not (tmp_path / "out").exists()


def test_the_budget_needs_the_robustness_evaluation(tmp_path):
    from edgekd.config import CompressConfig
    from edgekd.inputs import resolve_inputs

    cfg = CompressConfig(out=tmp_path / "out", max_robust_drop=0.02)
    cfg.bench.robust_images = 0
    with pytest.raises(InputError, match="needs the robustness evaluation"):
        resolve_inputs(cfg, log=lambda m: None)
    cfg.bench.robust_images = -3
    with pytest.raises(InputError, match="robust_images must be an integer >= 0"):
        resolve_inputs(cfg, log=lambda m: None)


# --------------------------------------------------------------------------- the report


def test_the_report_section_table_and_plot_carry_the_same_numbers():
    import numpy as np

    from edgekd.metrics.classification import roc_auc
    from edgekd.report import plots
    from edgekd.report.html import robustness_html
    from edgekd.report.robustness import markdown, robustness_section
    from edgekd.robust import DEFAULT_SHIFTS
    from edgekd.robust.candidates import RobustRun
    from edgekd.robust.evaluate import robustness_of

    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(12, int), np.ones(12, int)]
    x = (rng.random((24, 1, 12, 12), dtype=np.float32) + labels[:, None, None, None] * 0.3 - 0.5) / 0.5

    def model(scale):
        return lambda b: np.stack([np.zeros(len(b)), scale * b[:, :, 4:8, 4:8].mean(axis=(1, 2, 3))], axis=1)

    teacher, student = cand("teacher", 1.0, 0, 0), cand("student", 0.1, 0, 0)
    teacher.role = "baseline"
    for split in ("val", "test"):
        res = robustness_of({"teacher": model(1.0), "student": model(2.0)}, x, labels, roc_auc, DEFAULT_SHIFTS, 0,
                            metric="auc")
        teacher.robustness = {**(teacher.robustness or {}), split: res["teacher"]}
        student.robustness = {**(student.robustness or {}), split: res["student"]}
    run = RobustRun(("teacher", "student"), {"val": 24, "test": 24}, {"val": 24, "test": 30}, 1.5, DEFAULT_SHIFTS, 0, "auc")
    sec = robustness_section(run, [teacher, student], student, {"max_robust_drop": 0.02, "rejected_for_robustness": []})
    assert sec["shown"] == "student" and len(sec["shifts"]) == 24 and sec["images"]["test"] == 24
    t = sec["candidates"]["teacher"]["test"]
    assert t["mean_drop"] == pytest.approx(teacher.robustness["test"].mean_drop)
    report = {"robustness": sec}
    md = "\n".join(markdown(report))
    noise3 = t["scores"][2]
    assert noise3["shift"] == "gaussian-noise" and noise3["severity"] == 3
    assert f"| gaussian-noise | 3 | σ (pixel units) 0.1 | {noise3['metric']:.4f} | {noise3['drop']:+.4f} |" in md
    assert f"| teacher | {sec['candidates']['teacher']['val']['mean_drop']:+.4f} | {t['mean_drop']:+.4f} |" in md
    page = robustness_html(report)
    assert 'id="robustness"' in page and 'id="fig-robustness"' in page and f"{noise3['metric']:.4f}" in page
    curves = plots.robustness_curves(report)
    assert curves["gaussian-noise"]["teacher"] == [t["clean"]] + [s["metric"] for s in t["scores"][:3]]
    assert markdown({"robustness": None}) == [] and robustness_html({}) == ""


def test_the_robustness_sample_left_unset_is_the_tasks():
    from edgekd.config import CompressConfig
    from edgekd.tasks import get_task

    assert CompressConfig().bench.robust_images is None
    assert get_task("classification").with_defaults(CompressConfig()).bench.robust_images == 512
    assert get_task("segmentation").with_defaults(CompressConfig(task="segmentation")).bench.robust_images == 64
    asked = CompressConfig(task="segmentation")
    asked.bench.robust_images = 200  # a value asked for wins
    assert get_task("segmentation").with_defaults(asked).bench.robust_images == 200
