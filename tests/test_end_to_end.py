"""`edgekd compress` end to end through the CLI, on a small slice of real chest X-rays
(../shared/data/pneumoniamnist.npz when present, synthetic X-ray-like images otherwise)."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from edgekd.cli import app

from .conftest import QUICK

runner = CliRunner()


REQUIRED_CANDIDATE_KEYS = {"name", "stage", "backend", "precision", "path", "size_bytes", "params", "macs",
                           "latency_ms", "metrics"}


def test_compress_ships_a_verified_student_and_writes_the_report(data_and_teacher, tmp_path):
    npz, teacher = data_and_teacher
    out = tmp_path / "build"
    result = runner.invoke(app, ["compress", "--teacher", str(teacher), "--data", str(npz), "--target",
                                 "generic-cpu", "--out", str(out), "--max-auc-drop", "1.0", "--max-sensitivity-drop", "1.0", *QUICK])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())

    # the schema users' scripts read (README "report.json")
    assert report["target"]["name"] == "generic-cpu"
    assert report["teacher"]["format"] == "onnx" and len(report["teacher"]["sha256"]) == 64
    ds = report["dataset"]
    assert ds["num_classes"] == 2 and ds["splits"] == {"train": 240, "val": 240, "test": 240}
    assert len(ds["sha256"]) == 64 and ds["image_size"] == [28, 28]
    assert report["preprocessing"]["mean"] == [0.5] and report["preprocessing"]["std"] == [0.5]
    assert report["machine"]["cpu"] and report["machine"]["threads"] == 2
    assert {"onnxruntime", "openvino", "torch", "nncf"} <= set(report["machine"]["runtimes"])
    for c in report["candidates"]:
        assert REQUIRED_CANDIDATE_KEYS <= set(c), c["name"]
        assert 0.0 <= c["metrics"]["auc"] <= 1.0
        for key in ("accuracy", "sensitivity", "specificity"):
            assert 0.0 <= c["metrics"][key] <= 1.0

    names = {c["name"]: c for c in report["candidates"]}
    # every stage and every lowered artifact is a candidate; an ONNX teacher has no torch baseline
    assert "teacher-torch-fp32" not in names
    for n in ("teacher-onnxruntime-fp32", "teacher-openvino-fp32", "teacher-openvino-int8", "student-distilled",
              "student-pruned", "student-int8-ptq", "student-int8-qat", "student-fp32-onnxruntime",
              "student-fp32-openvino", "student-int8-onnxruntime", "student-int8-openvino"):
        assert n in names, n
    # pruning really removed channels
    assert names["student-pruned"]["params"] < names["student-distilled"]["params"]
    assert names["student-pruned"]["macs"] <= 0.6 * names["student-distilled"]["macs"]
    # every lowered student file exists and was checked against its torch source
    for n in ("student-fp32-onnxruntime", "student-fp32-openvino", "student-int8-onnxruntime", "student-int8-openvino"):
        c = names[n]
        assert (out / c["path"]).is_file() and c["size_bytes"] > 0
        assert c["agreement"]["ok"] and c["agreement"]["n"] == 240
    # the OpenVINO precision is set explicitly and read back
    assert names["student-fp32-openvino"]["runtime_config"]["INFERENCE_PRECISION_HINT"] == "f32"
    # the INT8 ONNX is standard QDQ
    import onnx

    ops = {n.op_type for n in onnx.load(out / names["student-int8-onnxruntime"]["path"]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # shipped: a deployable generic-cpu (ONNX Runtime) student, the fastest eligible one
    shipped = names[report["shipped"]]
    assert shipped["backend"] == "onnxruntime" and shipped["role"] == "student"
    eligible = [names[n] for n in report["shipping"]["eligible"]]
    assert shipped["latency_ms"]["p50"] == min(c["latency_ms"]["p50"] for c in eligible)
    assert report["speedups"]["latency_vs_teacher-openvino-int8"] > 0
    md = (out / "report.md").read_text()
    assert f"**Shipped: `{report['shipped']}`**" in md
    assert f"{shipped['metrics']['auc']:.4f}" in md
    assert not list(tmp_path.glob(".build.partial*"))
    # how the student was taught: the step budget asked for, the teacher's mode, the views, the start
    tr = report["training"]
    assert tr["budget"]["distill_steps"] == 16 and tr["budget"]["source"] == "--max-steps"
    assert (tr["budget"]["prune_recovery_steps"], tr["budget"]["qat_steps"]) == (4, 4)
    assert tr["teacher_mode"] in ("online", "cached") and tr["teacher_mode_reason"]
    assert any("affine" in op for op in tr["augmentation"]["ops"])
    # where it was taught (--device auto): the training stages and the ONNX teacher (ONNX Runtime, CPU)
    import torch

    auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert tr["device"]["type"] == auto and tr["device"]["teacher"] == "cpu"
    assert report["config"]["device"] == "auto" and report["stages"]["teacher"]["device"] == "cpu"
    assert {report["stages"][s]["device"][:4] for s in ("distill", "prune", "quantize")} == {auto[:4]}
    distilled = report["stages"]["distill"]
    assert distilled["steps_planned"] == 16 and 0 < distilled["best_step"] <= 16
    # an ONNX teacher is cut down by default too (onnx2torch), and that student quantizes (INT8 above)
    assert distilled["student"] == "from-teacher" and distilled["derived"]["route"] == "onnx2torch"
    assert distilled["derived"]["macs"] <= distilled["derived"]["macs_target"] < distilled["derived"]["macs_teacher"]
    assert "skipped" not in report["stages"]["quantize"]
    # robustness with no budget to choose on: the reported test split only, every evaluated model
    rob = report["robustness"]
    assert rob["max_robust_drop"] is None and set(rob["images"]) == {"test"}
    assert all(set(r) == {"test"} for r in rob["candidates"].values()) and "val mean drop" not in md


def test_a_zoo_student_is_distilled_when_asked(data_and_teacher, tmp_path):
    npz, teacher = data_and_teacher
    out = tmp_path / "build"
    result = runner.invoke(app, ["compress", "--teacher", str(teacher), "--data", str(npz), "--target", "generic-cpu",
                                 "--out", str(out), "--student", "lcnet_100", "--no-quantize", "--max-auc-drop", "1.0",
                                 "--max-sensitivity-drop", "1.0", "--max-robust-drop", "1.0", *QUICK])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    d = report["stages"]["distill"]
    assert d["student"] == "lcnet_100" and d["start"] == "random init" and "derived" not in d
    # a robustness budget chooses on val and confirms on test: both are scored
    rob = report["robustness"]
    assert rob["max_robust_drop"] == 1.0 and set(rob["images"]) == {"val", "test"}
    assert all(set(r) == {"val", "test"} for r in rob["candidates"].values())
    assert "val mean drop" in (out / "report.md").read_text()


def test_when_nothing_qualifies_it_exits_non_zero_and_keeps_the_evidence(data_and_teacher, tmp_path):
    npz, teacher = data_and_teacher
    out = tmp_path / "build"
    # demanding an AUC 1.0 above the teacher's is a budget no student can meet
    result = runner.invoke(app, ["compress", "--teacher", str(teacher), "--data", str(npz), "--target", "intel-cpu",
                                 "--out", str(out), "--max-auc-drop", "-1", "--no-quantize", "--prune-ratio", "0",
                                 "--quiet", *QUICK])
    assert result.exit_code == 3, result.output
    err = result.stderr.strip()
    assert err.startswith("error: nothing shipped") and "\n" not in err
    report = json.loads((out / "report.json").read_text())
    assert report["shipped"] is None
    assert report["shipping"]["eligible"] == []
    assert (out / report["candidates"][-1]["path"]).exists()


def test_the_embedded_demo_runs_offline_with_a_cached_timm_teacher(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    args = ["compress", "--target", "intel-cpu", "--out", str(out), "--max-samples", "160", "--no-quantize",
            "--max-steps", "4", "--prune-ratio", "0", "--iterations", "10", "--max-auc-drop", "1.0", "--max-sensitivity-drop", "1.0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["synthetic"] is True and report["dataset"]["format"] == "synthetic"
    assert report["teacher"]["format"] == "timm" and report["teacher"]["spec"] == "timm:resnet18"
    assert "teacher-torch-fp32" in {c["name"] for c in report["candidates"]}
    cached = list((tmp_path / "cache").glob("demo-teacher-*.safetensors"))
    assert len(cached) == 1
    # a second run reuses the cached teacher (same bytes, same hash)
    mtime = cached[0].stat().st_mtime
    result = runner.invoke(app, args + ["--overwrite"])
    assert result.exit_code == 0, result.output
    assert cached[0].stat().st_mtime == mtime
    assert json.loads((out / "report.json").read_text())["teacher"]["sha256"] == report["teacher"]["sha256"]
