"""`edgekd verify`: a shipped bundle checks out untouched, and every kind of change is named.

One real `edgekd compress --archive` run (generic-cpu, quick settings, fp32 only) builds the bundle; each
test tampers with its own copy: a changed byte, a missing file, an extra file, an edited
manifest, changed sample labels, a consistently re-hashed bundle with a different model.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekd._io import sha256_file
from edgekd.bundle.manifest import file_index, manifest_digest
from edgekd.bundle.verify import verify_bundle
from edgekd.cli import app

from .conftest import QUICK

runner = CliRunner()


@pytest.fixture(scope="module")
def build(data_and_teacher, tmp_path_factory) -> Path:
    """The output folder of one real compress run with --archive."""
    npz, teacher = data_and_teacher
    out = tmp_path_factory.mktemp("verify") / "build"
    result = runner.invoke(app, ["compress", "--teacher", str(teacher), "--data", str(npz), "--target", "generic-cpu",
                                 "--out", str(out), "--max-auc-drop", "1.0", "--archive", "--quiet", "--no-quantize", *QUICK])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def bundle(build, tmp_path) -> Path:
    """A private copy of the bundle folder to tamper with."""
    return Path(shutil.copytree(build / "bundle", tmp_path / "bundle"))


def verify_cli(*args: str):
    return runner.invoke(app, ["verify", *map(str, args)])


def rehash(bundle: Path) -> None:
    """What a careless (or dishonest) editor does: re-list every file and recompute the digest."""
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"] = file_index(bundle)
    m["manifest_sha256"] = manifest_digest(m)
    (bundle / "manifest.json").write_text(json.dumps(m))


def test_the_manifest_records_every_file_and_where_the_model_came_from(build):
    report = json.loads((build / "report.json").read_text())
    bundle = build / "bundle"
    m = json.loads((bundle / "manifest.json").read_text())
    on_disk = sorted(p.name for p in bundle.iterdir())
    assert sorted(m["files"]) == sorted(set(on_disk) - {"manifest.json"})
    assert {"model.onnx", "sample.npz", "expected_logits.npy", "runner.py", "report.json"} <= set(m["files"])
    for name, rec in m["files"].items():
        assert rec == {"sha256": sha256_file(bundle / name), "size": (bundle / name).stat().st_size}
    assert report["bundle"]["files"] == on_disk and report["bundle"]["archive"] == "bundle.tar.gz"
    # provenance an audit asks for
    assert m["edgekd_version"] == report["edgekd_version"] and m["created"]
    assert m["teacher"]["sha256"] == report["teacher"]["sha256"] and m["teacher"]["format"] == "onnx"
    assert m["dataset"]["sha256"] == report["dataset"]["sha256"]
    assert m["dataset"]["splits"] == {"train": 240, "val": 240, "test": 240}
    assert m["config"] == report["config"] and m["config"]["archive"] is True
    assert m["target"] == report["target"] and m["preprocessing"] == report["preprocessing"]
    assert m["labels"]["class_names"] == report["dataset"]["class_names"]
    assert m["shipped"]["name"] == report["shipped"] and 0 <= m["shipped"]["metrics"]["auc"] <= 1
    assert m["shipped"]["latency_ms"]["p50"] > 0
    assert {"onnxruntime", "openvino", "python"} <= set(m["runtimes"])
    assert m["verification"]["runtime"] == "onnxruntime" and m["verification"]["model"] == "model.onnx"
    assert m["manifest_sha256"] == manifest_digest(m)
    # the recorded outputs are the shipped model's logits on every sample image
    sample = np.load(bundle / "sample.npz")
    expected = np.load(bundle / "expected_logits.npy")
    assert expected.shape == (len(sample["labels"]), 2) and expected.dtype == np.float32
    assert (build / "bundle.tar.gz").is_file()


@pytest.mark.parametrize("target", ["bundle", "bundle.tar.gz"])
def test_an_untouched_bundle_verifies_as_folder_and_as_archive(build, target):
    result = verify_cli(build / target)
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("VERIFIED")
    m = json.loads((build / "bundle" / "manifest.json").read_text())
    assert f"files    {len(m['files'])} of {len(m['files'])} match" in result.output
    assert f"sha256 {m['manifest_sha256']}" in result.output
    res = verify_bundle(build / target)
    assert res.ok and res.outputs.ok and res.outputs.n == 240
    assert res.outputs.max_abs_diff == 0.0  # same file, same runtime, one thread: reproduced exactly


def test_a_changed_byte_in_the_model_is_named_and_the_model_is_not_rerun(bundle):
    model = bundle / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    result = verify_cli(bundle)
    assert result.exit_code == 1
    assert "changed  model.onnx: sha256" in result.output
    assert "outputs  skipped: model.onnx did not verify" in result.output
    assert result.output.rstrip().endswith("NOT VERIFIED: 1 problem")


def test_a_missing_file_is_named(bundle):
    (bundle / "labels.json").unlink()
    result = verify_cli(bundle)
    assert result.exit_code == 1
    assert "missing  labels.json" in result.output


def test_an_extra_file_is_named(bundle):
    (bundle / "notes.txt").write_text("added after shipping\n")
    (bundle / "sub").mkdir()
    (bundle / "sub" / "hidden.bin").write_bytes(b"x")
    result = verify_cli(bundle)
    assert result.exit_code == 1
    assert "extra    notes.txt" in result.output and "extra    sub/hidden.bin" in result.output
    assert "NOT VERIFIED: 2 problems" in result.output


def test_an_edited_manifest_fails_its_integrity_check(bundle):
    path = bundle / "manifest.json"
    m = json.loads(path.read_text())
    m["shipped"]["metrics"]["auc"] = 0.999  # a better-looking figure
    path.write_text(json.dumps(m, indent=2))
    result = verify_cli(bundle)
    assert result.exit_code == 1
    assert "manifest FAILED" in result.output
    assert "manifest manifest.json: integrity check failed" in result.output


def test_changed_sample_labels_fail_the_sample_hash(bundle):
    path = bundle / "sample.npz"
    with np.load(path) as s:
        arrays = dict(s)
    arrays["labels"] = 1 - arrays["labels"]
    np.savez(path, **arrays)
    result = verify_cli(bundle)
    assert result.exit_code == 1
    assert "changed  sample.npz" in result.output and "outputs  skipped: sample.npz did not verify" in result.output


def test_a_rehashed_bundle_with_another_model_still_fails_on_its_outputs(bundle, data_and_teacher):
    _, teacher = data_and_teacher
    shutil.copyfile(teacher, bundle / "model.onnx")  # same input and output shapes, different logits
    rehash(bundle)
    res = verify_bundle(bundle)
    assert [(p.kind, p.path) for p in res.problems] == [("outputs", "model.onnx")]
    assert res.outputs.max_abs_diff > res.outputs.allowed
    result = verify_cli(bundle)
    assert result.exit_code == 1 and "outputs  FAILED" in result.output


def test_rehashed_recorded_outputs_fail_too(bundle):
    expected = np.load(bundle / "expected_logits.npy")
    expected[0] += 1.0
    np.save(bundle / "expected_logits.npy", expected)
    rehash(bundle)
    res = verify_bundle(bundle)
    assert not res.ok and res.outputs.max_abs_diff == pytest.approx(1.0, abs=1e-5)


def test_a_pinned_manifest_digest_catches_a_consistent_rewrite(bundle):
    pinned = json.loads((bundle / "manifest.json").read_text())["manifest_sha256"]
    assert verify_cli(bundle, "--manifest-sha256", pinned, "--skip-outputs").exit_code == 0
    (bundle / "README.txt").write_text("rewritten\n")
    rehash(bundle)  # every hash consistent again ...
    assert verify_cli(bundle, "--skip-outputs").exit_code == 0
    result = verify_cli(bundle, "--manifest-sha256", pinned, "--skip-outputs")  # ... but not the pinned one
    assert result.exit_code == 1 and "is not the pinned manifest" in result.output


def test_a_tampered_archive_is_reported_by_member_name(build, tmp_path):
    import tarfile

    src = tmp_path / "src"
    with tarfile.open(build / "bundle.tar.gz") as tar:
        tar.extractall(src, filter="data")
    (src / "bundle" / "runner.py").write_text("print('not the runner')\n")
    (src / "extra.txt").write_text("beside the bundle\n")
    archive = tmp_path / "tampered.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "bundle", arcname="bundle")
        tar.add(src / "extra.txt", arcname="extra.txt")
    result = verify_cli(archive, "--json")
    assert result.exit_code == 1
    problems = {(p["kind"], p["path"]) for p in json.loads(result.output)["problems"]}
    assert problems == {("changed", "runner.py"), ("extra", "(archive)/extra.txt")}


def test_not_a_bundle_is_bad_input_with_one_line(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"")
    for path in (tmp_path, tmp_path / "nope", tmp_path / "model.onnx"):
        result = verify_cli(path)
        assert result.exit_code == 2, result.output
        err = result.stderr.strip()
        assert err.startswith("error: ") and "\n" not in err
