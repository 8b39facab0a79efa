"""Robustness for segmentation: the benchmark's evaluation scores masks by mean foreground Dice, with the
masks moved by the geometric shifts, on the same candidates a classifier's would (teacher through its
fastest checked fp32 file, the deployable students), and the report carries the Dice figures."""
from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pytest

import edgekd  # noqa: F401  (before kornia/timm: edgekd._compat)
from edgekd.measure.candidates import Candidate
from edgekd.robust import DEFAULT_SHIFTS
from edgekd.robust.candidates import evaluate_candidates, mean_dice_of
from tests.test_robust_shifts import pixels, square


class Segmenter:
    """edgekd.lower._base.Runner's shape: per-pixel logits N×2×H×W, bright is foreground."""

    def __init__(self, backend, precision="fp32", ignore_image=None):
        self.backend, self.precision, self.path, self.calls = backend, precision, None, 0
        self.ignore_image = ignore_image  # a fixed mask, predicted whatever the image is

    def __call__(self, x):
        self.calls += 1
        fg = (pixels(x)[:, 0] > 0.5) if self.ignore_image is None else np.broadcast_to(self.ignore_image, x.shape[:1] + x.shape[2:])
        return np.stack([~fg, fg], axis=1).astype(np.float32)


def cands(student_runner):
    torch_t = Candidate("teacher-torch-fp32", "teacher", "torch", "fp32", "baseline", runner=Segmenter("torch"))
    ort_t = Candidate("teacher-onnxruntime-fp32", "teacher", "onnxruntime", "fp32", "baseline",
                      runner=Segmenter("onnxruntime"))
    student = Candidate("student-fp32-onnxruntime", "lower", "onnxruntime", "fp32", "student", runner=student_runner)
    for c in (torch_t, ort_t, student):
        c.metrics = NS(dice=1.0)
    ort_t.agreement = NS(ok=True)  # checked against the torch teacher when it was exported
    return torch_t, ort_t, student


PROFILE = NS(runtime="onnxruntime", precisions=("fp32", "int8"))


def test_mean_dice_is_the_foreground_dice_of_argmax_masks():
    _, mask = square(n=2, h=20, w=20, top=5, left=5, side=6)
    assert mean_dice_of(2)(mask, mask) == 1.0
    half = mask.copy()
    half[:, 5:8] = 0  # half of each square lost: Dice 2·18/(18+36)
    assert mean_dice_of(2)(half, mask) == pytest.approx(2 * 18 / 54)


def test_segmentation_candidates_are_scored_by_dice_with_the_masks_moved():
    x, mask = square(n=6, h=40, w=40)
    torch_t, ort_t, student = cands(Segmenter("onnxruntime", ignore_image=mask[0].astype(bool)))
    run = evaluate_candidates(torch_t, [torch_t, ort_t, student], PROFILE, {"val": (x, mask), "test": (x, mask)},
                              mean=(0.5,), std=(0.5,), seed=0, max_images=512, metric="dice", num_classes=2)
    assert run.metric == "dice" and run.evaluated == ("teacher-torch-fp32", "student-fp32-onnxruntime")
    assert torch_t.runner.calls == 0 and ort_t.runner.calls > 0  # the torch teacher scored through its checked ORT file
    assert run.teacher_scored_by == "teacher-onnxruntime-fp32"
    t, s = torch_t.robustness["test"], student.robustness["test"]
    assert t.metric == s.metric == "dice" and len(t.scores) == len(DEFAULT_SHIFTS)
    assert t.clean == s.clean == 1.0
    # the image-following teacher stays perfect when the square and its mask move together ...
    assert t.score("translation", 3).metric == 1.0 and t.score("rotation", 2).metric > 0.95
    # ... the student that ignores the image keeps the old mask and loses Dice under every move
    for sev in (1, 2, 3):
        assert s.score("translation", sev).drop > 0.2
    assert s.score("contrast", 2).drop == 0.0 and s.mean_drop > t.mean_drop


def test_the_metric_is_checked_and_auc_stays_the_default():
    x, mask = square(n=4, h=20, w=20, top=5, left=5, side=6)
    torch_t, ort_t, student = cands(Segmenter("onnxruntime"))
    with pytest.raises(ValueError, match="'auc' or 'dice'"):
        evaluate_candidates(torch_t, [torch_t, ort_t, student], PROFILE, {"test": (x, mask)}, mean=(0.5,),
                            std=(0.5,), seed=0, max_images=8, metric="iou")


def test_the_segmentation_task_asks_for_dice_and_still_refuses_the_budget():
    from edgekd.config import CompressConfig
    from edgekd.errors import InputError
    from edgekd.tasks.classification import ClassificationTask
    from edgekd.tasks.segmentation import SegmentationTask

    assert SegmentationTask.robustness and SegmentationTask.robust_metric == "dice"
    assert ClassificationTask.robustness and ClassificationTask.robust_metric == "auc"
    with pytest.raises(InputError, match="--max-robust-drop is not applied to segmentation yet"):
        SegmentationTask().check_settings(CompressConfig(task="segmentation", max_robust_drop=0.02))


def test_a_segmentation_report_shows_the_dice_robustness_table():
    from edgekd.report.robustness import markdown

    scores = [{"shift": s.name, "severity": s.severity, "value": s.value, "metric": 0.7, "drop": 0.1}
              for s in DEFAULT_SHIFTS]
    r = {"clean": 0.8, "mean_drop": 0.1, "worst": "translation@3", "scores": scores}
    report = {"task": "segmentation", "robustness": {
        "metric": "dice", "seed": 0, "images": {"test": 24}, "available": {"test": 24}, "seconds": 1.0,
        "teacher": "teacher-torch-fp32", "shown": "s", "max_robust_drop": None, "rejected_for_robustness": [],
        "shifts": [s.to_dict() for s in DEFAULT_SHIFTS],
        "candidates": {"teacher-torch-fp32": {"test": r, "val": r}, "s": {"test": r, "val": r}}}}
    md = "\n".join(markdown(report))
    assert "teacher DICE" in md and "| clean | — | — | 0.8000 |" in md


def _teacher_file(name, backend, ms, ok):
    c = Candidate(name, "teacher", backend, "fp32", "baseline", runner=Segmenter(backend))
    c.latency, c.agreement = NS(p50=ms), (None if ok is None else NS(ok=ok))
    return c


def test_the_torch_teacher_is_scored_through_its_fastest_checked_fp32_file():
    from edgekd.robust.candidates import runner_for

    torch_t = Candidate("teacher-torch-fp32", "teacher", "torch", "fp32", "baseline", runner=Segmenter("torch"))
    ort = _teacher_file("teacher-onnxruntime-fp32", "onnxruntime", 29.1, True)
    ov = _teacher_file("teacher-openvino-fp32", "openvino", 22.5, True)
    int8 = Candidate("teacher-openvino-int8", "teacher", "openvino", "int8", "baseline", runner=Segmenter("int8"))
    int8.latency, int8.agreement = NS(p50=5.0), NS(ok=True)  # faster, but not the same network's figures
    assert runner_for(torch_t, [torch_t, ort, ov, int8]) is ov.runner
    ov.agreement = NS(ok=False)  # a file that disagrees with the torch teacher is never used
    assert runner_for(torch_t, [torch_t, ort, ov, int8]) is ort.runner
    ort.agreement = None  # nor one that was never checked
    assert runner_for(torch_t, [torch_t, ort, ov, int8]) is torch_t.runner
