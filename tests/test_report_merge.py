"""`edgekd report --merge device.json`: device figures land next to the host figures, labelled."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.report.writer import markdown

runner = CliRunner()


def host_report() -> dict:
    cand = {
        "name": "student-fp16-tensorrt", "stage": "lower", "backend": "tensorrt", "precision": "fp16",
        "role": "student", "source": "student-pruned", "path": "models/student-fp32.onnx", "size_bytes": 1_000_000,
        "params": 274_000, "macs": 394_000, "latency_ms": None,
        "metrics": {"accuracy": 0.85, "auc": 0.93, "sensitivity": 0.9, "specificity": 0.8, "threshold": 0.5},
        "agreement": None, "runtime_config": None, "notes": [],
    }
    return {
        "schema_version": 1, "edgekd_version": "0.1.0", "created": "2026-11-22T00:00:00+00:00", "seed": 0,
        "target": {"name": "jetson-nano"},
        "teacher": {"spec": "t.onnx", "path": "t.onnx", "sha256": "0" * 64, "format": "onnx"},
        "dataset": {"path": "d.npz", "sha256": "1" * 64, "format": "npz", "synthetic": False, "num_classes": 2,
                    "class_names": ["normal", "pneumonia"], "channels": 1, "image_size": [64, 64],
                    "splits": {"train": 10, "val": 10, "test": 10}},
        "preprocessing": {"order": ["to_float", "scale", "resize", "normalize"], "image_size": 64,
                          "interpolation": "bilinear", "mean": [0.5], "std": [0.5], "layout": "NCHW"},
        "machine": {"cpu": "HostCPU", "isa": [], "threads": 2, "os": "Linux", "python": "3.11", "runtimes": {}},
        "config": {"bench": {"warmup": 20, "iterations": 200}},
        "stages": {}, "candidates": [cand], "shipped": cand["name"],
        "shipping": {"reason": "preferred precision"}, "speedups": {},
    }


def device_json(p50: float = 1.25) -> dict:
    return {
        "runner_version": "1", "measured_on": "device",
        "device": {"hostname": "nano", "model": "NVIDIA Jetson Nano Developer Kit", "jetpack": "4.6.4"},
        "runtime": {"name": "tensorrt", "version": "8.2.1", "precision": "fp16"},
        "model": {"path": "model.engine", "sha256": "2" * 64}, "batch": 1,
        "latency_ms": {"p50": p50, "p90": 1.4, "p99": 1.9, "mean": 1.3}, "throughput_ips": 800.0,
        "iterations": 500, "warmup": 50, "sample": {"path": "sample.npz", "n": 300},
        "metrics": {"accuracy": 0.86, "auc": 0.931},
    }


@pytest.fixture
def build(tmp_path) -> Path:
    (tmp_path / "report.json").write_text(json.dumps(host_report()))
    (tmp_path / "device.json").write_text(json.dumps(device_json()))
    return tmp_path


def test_merge_adds_device_figures_beside_the_host_ones(build):
    result = runner.invoke(app, ["report", "--merge", str(build / "device.json"), "--report", str(build / "report.json")])
    assert result.exit_code == 0, result.output
    rep = json.loads((build / "report.json").read_text())
    [m] = rep["device_measurements"]
    assert m["candidate"] == "student-fp16-tensorrt" and m["measured_on"] == "device"
    assert m["latency_ms"]["p50"] == 1.25 and m["runtime"]["version"] == "8.2.1"
    md = (build / "report.md").read_text()
    assert "## Measured on the device" in md
    assert "| student-fp16-tensorrt | host: HostCPU |" in md
    assert "| student-fp16-tensorrt | device: NVIDIA Jetson Nano Developer Kit | tensorrt 8.2.1 fp16 | 1 | 1.250 |" in md


def test_merging_twice_keeps_both_measurements(build):
    (build / "device2.json").write_text(json.dumps(device_json(p50=2.5)))
    for f in ("device.json", "device2.json"):
        assert runner.invoke(app, ["report", "--merge", str(build / f), "--report", str(build / "report.json")]).exit_code == 0
    rep = json.loads((build / "report.json").read_text())
    assert [m["latency_ms"]["p50"] for m in rep["device_measurements"]] == [1.25, 2.5]
    assert markdown(rep).count("device: NVIDIA Jetson Nano") == 2


@pytest.mark.parametrize("content, message", [
    ("not json", "is not readable JSON"),
    ("[1, 2]", "holds a JSON list"),
    ('{"latency_ms": {"p50": 1}}', "was not written by edgekd's runner.py"),
    (json.dumps({**device_json(), "measured_on": "host"}), "expected 'device'"),
    (json.dumps({**device_json(), "latency_ms": {"p50": "fast"}}), "latency_ms must hold numbers"),
])
def test_a_bad_device_file_is_refused_and_the_report_is_untouched(build, content, message):
    (build / "device.json").write_text(content)
    before = (build / "report.json").read_text()
    result = runner.invoke(app, ["report", "--merge", str(build / "device.json"), "--report", str(build / "report.json")])
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert (build / "report.json").read_text() == before


def test_unknown_candidate_and_missing_report(build):
    r = runner.invoke(app, ["report", "--merge", str(build / "device.json"), "--report", str(build / "report.json"),
                            "--candidate", "student-fp16-tensort"])
    assert r.exit_code == 2 and "did you mean 'student-fp16-tensorrt'" in r.stderr
    r = runner.invoke(app, ["report", "--merge", str(build / "device.json"), "--report", str(build / "nope.json")])
    assert r.exit_code == 2 and "does not exist" in r.stderr
