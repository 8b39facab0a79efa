"""`edgekd compress --task segmentation` end to end through the CLI: the same stages as a classifier
(distil, prune, INT8, lower, benchmark), Dice shipping with --max-dice-drop, overlays in the report,
a bundle whose runner writes masks and Dice and that `edgekd verify` re-runs."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgekd.cli import app

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]

runner = CliRunner()
# the zoo's smallest student keeps this quick; the default student's pruning: tests/test_seg_compress.py
QUICK_SEG = ["--task", "segmentation", "--student", "unet-mobilenetv3_small_050", "--max-steps", "12",
             "--prune-steps", "1", "--recovery-steps", "2",
             "--qat-steps", "2", "--iterations", "10", "--target", "generic-cpu"]


@pytest.fixture(scope="module")
def seg_data_and_teacher(tmp_path_factory):
    """Synthetic ultrasound at 32×32 (.npz) and an smp U-Net teacher taught the masks for a few steps."""
    import edgekd.models  # noqa: F401  (torchvision shim before smp imports timm)
    from edgekd.config import Preprocessing
    from edgekd.data.segmentation import load_segmentation
    from edgekd.data.synthetic_us import synthetic_ultrasound_splits
    from edgekd.demo import train_seg_teacher
    from edgekd.models import save_weights
    from edgekd.models.segmentation import create_seg_teacher

    folder = tmp_path_factory.mktemp("seg")
    splits = synthetic_ultrasound_splits(64, 24, 24, size=32, seed=5)
    npz = folder / "us.npz"
    np.savez(npz, **{f"{s}_images": im for s, (im, _) in splits.items()},
             **{f"{s}_masks": m for s, (_, m) in splits.items()})
    torch.manual_seed(0)
    teacher = create_seg_teacher("Unet", "resnet18", 1, 2)
    train_seg_teacher(teacher, load_segmentation(npz, Preprocessing()), steps=30, seed=0)
    weights = save_weights(teacher, folder / "teacher.safetensors")
    return npz, weights


def test_segmentation_runs_the_same_stages_ships_on_dice_and_bundles_masks(seg_data_and_teacher, tmp_path):
    npz, weights = seg_data_and_teacher
    out = tmp_path / "build"
    result = runner.invoke(app, ["compress", "--teacher", "smp:Unet:resnet18", "--teacher-weights", str(weights),
                                 "--data", str(npz), "--out", str(out), "--max-dice-drop", "1.0", *QUICK_SEG])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "segmentation" and "segmentation" in report and "clinical" not in report
    assert report["dataset"]["image_size"] == [32, 32] and report["teacher"]["format"] == "smp"
    names = {c["name"]: c for c in report["candidates"]}
    for n in ("teacher-torch-fp32", "teacher-onnxruntime-fp32", "teacher-openvino-int8", "student-distilled",
              "student-pruned", "student-int8-qat", "student-fp32-onnxruntime", "student-int8-onnxruntime"):
        assert n in names, n
    for c in report["candidates"]:
        m = c["metrics"]
        assert 0.0 <= m["dice"] <= 1.0 and 0.0 <= m["val_dice"] <= 1.0 and 0.0 <= m["iou"] <= m["dice"] + 1e-9
    # the segmentation default prunes whole blocks and no channels (the classifier default: 80 % of the MACs)
    assert report["config"]["prune"]["ratio"] == 0.0 and report["config"]["prune"]["depth"] is None
    assert report["config"]["distill"]["temperature"] == 1.0  # per-pixel KL at T = 1 by default
    assert names["student-pruned"]["macs"] < names["student-distilled"]["macs"]  # blocks really removed
    assert report["stages"]["prune"]["steps"][-1]["kind"] == "depth"
    assert names["student-fp32-onnxruntime"]["agreement"]["ok"]  # per-pixel check of the exported file
    # chosen on val Dice, confirmed once on test, against the --max-dice-drop budget
    ship = report["shipping"]
    assert ship["chosen_on"] == "val" and ship["max_dice_drop"] == 1.0 and ship["budget_source"]["max_dice_drop"] == "option"
    assert ship["confirmation"]["dice"] == pytest.approx(names[report["shipped"]]["metrics"]["dice"])
    assert "mean Dice" in ship["rule"] and ship["non_inferiority"]["dice_diff"] is not None
    md = (out / "report.md").read_text()
    assert "## Segmentation" in md and f"{names[report['shipped']]['metrics']['dice']:.4f}" in md
    # the mean split by the truth: Dice where there is a lesion, false alarms on the images without one
    test_masks = np.load(npz)["test_masks"]
    lesion_free = int((test_masks.reshape(len(test_masks), -1).max(axis=1) == 0).sum())
    m = names[report["shipped"]]["metrics"]
    assert m["images_without"] == lesion_free and 0 <= m["false_alarms"] <= lesion_free
    assert 0.0 <= m["dice_present"] <= 1.0 and m["val_images_without"] is not None
    assert "### Images with and without the class" in md and f"{m['false_alarms']} of {lesion_free}" in md
    assert (out / "overlays.png").is_file() and report["segmentation"]["overlays"]
    assert "fig-overlays" in (out / "report.html").read_text()
    # robustness under shift, scored by mean Dice with the masks moved by the geometric shifts
    rob = report["robustness"]
    assert rob["metric"] == "dice" and rob["teacher"] == "teacher-torch-fp32" and rob["shown"] == report["shipped"]
    # no robustness budget for segmentation: test is scored and reported, val (the choice's split) is not needed
    assert rob["images"] == {"test": 24} and rob["max_robust_drop"] is None
    assert all(set(r) == {"test"} for r in rob["candidates"].values()) and "val mean drop" not in md
    assert rob["teacher_scored_by"] in {c["name"] for c in report["candidates"] if c["role"] == "baseline"}
    t = rob["candidates"]["teacher-torch-fp32"]["test"]
    assert t["clean"] == pytest.approx(names["teacher-torch-fp32"]["metrics"]["dice"], abs=1e-4)  # through its ORT file
    assert len(t["scores"]) == 24 and all(0.0 <= s["metric"] <= 1.0 for s in t["scores"])
    assert "## Robustness under acquisition shift" in md and "teacher DICE" in md
    assert 'id="robustness"' in (out / "report.html").read_text()

    bundle = out / "bundle"
    with np.load(bundle / "sample.npz") as s:
        assert s["masks"].shape == (24, 32, 32) and "labels" not in s.files
    labels = json.loads((bundle / "labels.json").read_text())
    assert labels["task"] == "segmentation"
    # the small-region rule: derived from the train masks, kept or not per model on val, carried to the runner
    rule = report["segmentation"]["small_regions"]
    assert rule["min_region"][0] == 0 and "train masks" in rule["source"] and "### Small regions" in md
    decision = names[report["shipped"]]["metrics"]["decision"]
    assert (report["shipped"] in rule["kept_by"]) == decision["applied"]
    assert labels["min_region"] == (rule["min_region"] if decision["applied"] else None)
    assert runner.invoke(app, ["verify", str(bundle)]).exit_code == 0
    # the standalone device runner: predicted masks and Dice on the sample
    model = bundle / ("model.onnx" if (bundle / "model.onnx").exists() else "model.xml")
    proc = subprocess.run([sys.executable, str(bundle / "runner.py"), "--model", str(model), "--iterations", "3",
                           "--warmup", "1", "--out", str(tmp_path / "device.json")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["task"] == "segmentation" and 0.0 <= doc["metrics"]["mean_dice"] <= 1.0
    assert doc["min_region"]["value"] == labels["min_region"]
    with np.load(tmp_path / "masks.npz") as m:
        assert m["masks"].shape == (24, 32, 32)


@pytest.mark.parametrize("args, words", [
    (["--task", "segmentaton"], "did you mean 'segmentation'"),
    (["--task", "segmentation", "--max-auc-drop", "0.01"], "--max-dice-drop"),
    (["--max-dice-drop", "0.01"], "segmentation budget"),
    (["--task", "segmentation", "--student", "from-teacher"], "U-Net zoo"),
    (["--task", "segmentation", "--feature-kd", "0.5"], "--feature-kd"),
    (["--min-region", "10"], "--min-region is for segmentation"),
])
def test_settings_a_task_cannot_honour_fail_in_one_line(args, words, tmp_path):
    result = runner.invoke(app, ["compress", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code != 0 and words in result.output and not (tmp_path / "o").exists()
    assert len([ln for ln in result.output.splitlines() if ln.startswith("error")]) == 1


def test_segmentation_data_and_teacher_errors_come_through_the_cli(seg_data_and_teacher, tmp_path):
    npz, weights = seg_data_and_teacher
    bad = tmp_path / "bad.npz"
    with np.load(npz) as z:
        arrays = dict(z)
    arrays["val_masks"] = arrays["val_masks"][:, :16]  # masks that do not match their images' size
    np.savez(bad, **arrays)
    base = ["compress", "--task", "segmentation", "--out", str(tmp_path / "o")]
    r = runner.invoke(app, [*base, "--teacher", "smp:Unet:resnet18", "--teacher-weights", str(weights), "--data", str(bad)])
    assert r.exit_code != 0 and "val" in r.output and "mask" in r.output
    r = runner.invoke(app, [*base, "--teacher", "smp:Unet:resnet34", "--teacher-weights", str(weights), "--data", str(npz)])
    assert r.exit_code != 0 and "do not fit smp:Unet:resnet34" in r.output
    r = runner.invoke(app, ["compress", "--out", str(tmp_path / "o"), "--teacher", "smp:Unet:resnet18",
                            "--teacher-weights", str(weights), "--data", str(npz)])
    assert r.exit_code != 0 and "--task segmentation" in r.output
    assert not (tmp_path / "o").exists()
