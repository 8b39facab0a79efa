"""`edgekd compress --target jetson-*` on the host: what a Jetson can run, a bundle that measures
itself on the device, and the device figures merged back into the report.

TensorRT is not installed here: the engine is built on the device from the bundle's ONNX. These
tests run the bundle's runner with ONNX Runtime on the host instead (same ONNX file, same sample).
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
from typer.testing import CliRunner

from edgekd._io import sha256_file
from edgekd.bundle.verify import verify_bundle
from edgekd.cli import app
from edgekd.lower.tensorrt import tensorrt_qdq_problems

from .conftest import QUICK

runner = CliRunner()
BUNDLE = {"model.onnx", "build_engine.sh", "runner.py", "sample.npz", "expected_logits.npy", "preprocessing.json",
          "labels.json", "report.json", "README.txt", "manifest.json"}


def compress(target, data_and_teacher, out):
    npz, teacher = data_and_teacher
    result = runner.invoke(app, ["compress", "--teacher", str(teacher), "--data", str(npz), "--target", target,
                                 "--out", str(out), "--max-auc-drop", "1.0", "--max-sensitivity-drop", "1.0", *QUICK])
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())


def test_jetson_nano_gets_an_fp32_onnx_and_an_fp16_engine_recipe(data_and_teacher, tmp_path):
    out = tmp_path / "nano"
    report = compress("jetson-nano", data_and_teacher, out)
    names = {c["name"]: c for c in report["candidates"]}
    # Maxwell has no INT8: nothing is quantized, and no Q/DQ file is offered to the device
    assert not [n for n, c in names.items() if c["precision"] == "int8" and c["role"] == "student"]
    assert report["shipped"] == "student-fp16-tensorrt"
    shipped = names["student-fp16-tensorrt"]
    assert shipped["latency_ms"] is None and "built on the device" in shipped["notes"][0]
    assert "cannot be built or timed on the host" in report["shipping"]["rule"]

    bundle = out / "bundle"
    assert {p.name for p in bundle.iterdir()} == BUNDLE
    assert sha256_file(bundle / "model.onnx") == sha256_file(out / shipped["path"])  # the fp32 student ONNX
    ops = {n.op_type for n in onnx.load(bundle / "model.onnx").graph.node}
    assert "QuantizeLinear" not in ops
    script = (bundle / "build_engine.sh").read_text()
    assert "--fp16" in script and "--int8" not in script and "useDLACore" not in script
    assert "--saveEngine=model.engine" in script and "TensorRT 8.2" in script
    assert (bundle / "build_engine.sh").stat().st_mode & 0o111
    sample = np.load(bundle / "sample.npz", allow_pickle=False)
    assert sample["images"].shape[1:] == (1, 28, 28) and len(sample["labels"]) == len(sample["images"]) == 240

    # the bundle measures itself (ONNX Runtime standing in for TensorRT on this host) ...
    device_json = tmp_path / "device.json"
    run = subprocess.run([sys.executable, "runner.py", "--model", "model.onnx", "--runtime", "onnxruntime",
                          "--sample", "sample.npz", "--iterations", "20", "--warmup", "5", "--out", str(device_json)],
                         cwd=bundle, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert run.returncode == 0, run.stderr
    dev = json.loads(device_json.read_text())
    assert dev["sample"]["n"] == 240 and dev["runtime"]["name"] == "onnxruntime"
    # ... on the same test images the host scored, so the device's AUC equals the host's
    assert abs(dev["metrics"]["auc"] - shipped["metrics"]["auc"]) < 1e-6
    # ... and the figures fold back into the report, labelled by where they were measured
    merged = runner.invoke(app, ["report", "--merge", str(device_json), "--report", str(out / "report.json")])
    assert merged.exit_code == 0, merged.output
    md = (out / "report.md").read_text()
    assert "## Measured on the device" in md and "| student-fp16-tensorrt | device:" in md


def test_xavier_nx_gets_a_tensorrt_ready_qdq_onnx_on_a_dla_core(data_and_teacher, tmp_path):
    out = tmp_path / "nx"
    report = compress("jetson-xavier-nx", data_and_teacher, out)
    names = {c["name"]: c for c in report["candidates"]}
    assert {"student-int8-tensorrt", "student-fp16-tensorrt"} <= set(names)
    assert report["shipped"] == "student-int8-tensorrt"  # the profile prefers int8, and the budget allows it
    trt = names["student-int8-tensorrt"]
    assert trt["agreement"]["ok"] and trt["agreement"]["source"] == "student-int8-onnxruntime"
    bundle = out / "bundle"
    assert tensorrt_qdq_problems(bundle / "model.onnx") == []  # symmetric int8, zero points 0, opset >= 13
    check = verify_bundle(bundle)  # every hash, and the INT8 ONNX re-run with ONNX Runtime reproduces its outputs
    assert check.ok and check.outputs.runtime == "onnxruntime" and check.outputs.max_abs_diff == 0.0
    assert tensorrt_qdq_problems(out / names["student-int8-onnxruntime"]["path"])  # NNCF's raw export is not
    script = (bundle / "build_engine.sh").read_text()
    assert "--int8" in script and "--useDLACore=0" in script and "--allowGPUFallback" in script
