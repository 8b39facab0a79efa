"""The bundle writer, its manifest and archive, without a compress run: a tiny model lowered to each
runtime, a bundle written for it as `compress` does, then verified; and archives crafted to
escape the extraction folder, each refused by member name."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgekd.bundle import bundle_entry, finish_bundle, write_bundle
from edgekd.bundle.archive import safe_extract, write_archive
from edgekd.bundle.manifest import TENSORRT_NOTE, manifest_digest
from edgekd.bundle.verify import OutputCheck, compare_logits, verify_bundle
from edgekd.cli import app
from edgekd.config import Preprocessing
from edgekd.data import Dataset
from edgekd.data._base import Split
from edgekd.errors import InputError
from edgekd.targets import load_target

runner = CliRunner()

# target, shipped backend, precision, model file the compress run would ship
CASES = [("generic-cpu", "onnxruntime", "fp32", "student.onnx"), ("intel-cpu", "openvino", "fp32", "student.xml"),
         ("jetson-orin-nano", "tensorrt", "fp16", "student.onnx")]


def tiny_data(n: int = 40) -> Dataset:
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randn(n, 1, 16, 16, generator=g), torch.randint(0, 2, (n,), generator=g))
    return Dataset(split, split, split, 2, 1, (16, 16), ["normal", "pneumonia"], "npz",
                   Preprocessing(channels=1), sha256="d" * 64)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A small CNN as ONNX and as OpenVINO IR in work/models/ (as compress leaves them)."""
    from edgekd.lower import get_backend

    work = tmp_path_factory.mktemp("work")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 2)).eval()
    example = torch.randn(1, 1, 16, 16)
    get_backend("onnxruntime").export_onnx(model, example, work / "models" / "student.onnx", opset=13)
    get_backend("openvino").export_openvino(model, example, work / "models" / "student.xml")
    return work


def make_bundle(models: Path, dest: Path, target: str, backend: str, precision: str, model: str,
                archive: bool = False, metrics: dict | None = None) -> Path:
    """Write a bundle into ``dest/bundle`` exactly as compress() does, with a minimal report."""
    import shutil

    shutil.copytree(models / "models", dest / "models")
    profile, data = load_target(target), tiny_data()
    shipped = {"name": f"student-{precision}-{backend}", "backend": backend, "precision": precision,
               "path": f"models/{model}", "metrics": metrics or {"auc": 0.9, "threshold": 0.5}, "latency_ms": None}
    bundle = write_bundle(dest, shipped, data, profile, seed=0)
    report = {"created": "2026-11-22T08:00:00+00:00", "edgekd_version": "0.1.0",
              "teacher": {"spec": "t.onnx", "path": "t.onnx", "sha256": "t" * 64, "format": "onnx"},
              "dataset": {"sha256": data.sha256, "splits": data.split_sizes(), "class_names": data.class_names},
              "config": {"seed": 0}, "target": profile.to_dict(), "preprocessing": data.preprocessing.to_dict(),
              "machine": {"python": "3.11", "runtimes": {"onnxruntime": "x"}}, "candidates": [shipped],
              "shipped": shipped["name"]}
    report["bundle"] = bundle_entry(bundle, archive=archive)
    finish_bundle(bundle, report)
    return bundle


@pytest.mark.parametrize("target,backend,precision,model", CASES)
def test_a_bundle_for_each_runtime_records_its_outputs_and_verifies(models, tmp_path, target, backend, precision,
                                                                    model):
    bundle = make_bundle(models, tmp_path, target, backend, precision, model)
    m = json.loads((bundle / "manifest.json").read_text())
    spec = m["verification"]
    if backend == "openvino":
        assert spec["runtime"] == "openvino" and {"model.xml", "model.bin"} <= set(m["files"])
    else:
        assert spec["runtime"] == "onnxruntime" and spec["model"] == "model.onnx"
    assert (spec.get("note") == TENSORRT_NOTE) == (backend == "tensorrt")
    if backend == "tensorrt":
        assert "build_engine.sh" in m["files"]
        assert spec["precision"] == "fp32"  # an FP16 engine is built from the fp32 ONNX the host runs
    assert sorted(m["files"]) == sorted(p.name for p in bundle.iterdir() if p.name != "manifest.json")
    assert m["manifest_sha256"] == manifest_digest(m)
    res = verify_bundle(bundle)
    assert res.ok, [p.line() for p in res.problems]
    assert res.outputs.n == 40 and res.outputs.max_abs_diff == 0.0 and res.outputs.agreement == 1.0


def test_a_changed_openvino_weights_file_is_named(models, tmp_path):
    bundle = make_bundle(models, tmp_path, "intel-cpu", "openvino", "fp32", "student.xml")
    data = bytearray((bundle / "model.bin").read_bytes())
    data[-1] ^= 0xFF
    (bundle / "model.bin").write_bytes(bytes(data))
    res = verify_bundle(bundle)
    assert [(p.kind, p.path) for p in res.problems] == [("changed", "model.bin")]
    assert res.outputs.skipped == "model.bin did not verify"


def test_a_rehashed_unloadable_model_or_an_unreadable_manifest_fails_without_a_crash(models, tmp_path):
    from edgekd.bundle.manifest import file_index

    bundle = make_bundle(models, tmp_path, "generic-cpu", "onnxruntime", "fp32", "student.onnx")
    (bundle / "model.onnx").write_bytes(b"not an onnx file")
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"] = file_index(bundle)
    m["manifest_sha256"] = manifest_digest(m)
    (bundle / "manifest.json").write_text(json.dumps(m))
    res = verify_bundle(bundle)
    assert [(p.kind, p.path) for p in res.problems] == [("outputs", "model.onnx")]
    assert "could not be re-run" in res.problems[0].detail
    (bundle / "manifest.json").write_text("{ truncated")
    result = runner.invoke(app, ["verify", str(bundle)])
    assert result.exit_code == 1 and "manifest manifest.json: not valid JSON" in result.output


def test_the_archive_is_reproducible_and_holds_only_plain_files_under_bundle(models, tmp_path):
    bundle = make_bundle(models, tmp_path, "generic-cpu", "onnxruntime", "fp32", "student.onnx", archive=True)
    archive = tmp_path / "bundle.tar.gz"
    assert archive.is_file()
    again = write_archive(bundle, tmp_path / "again.tar.gz")
    assert again.read_bytes() == archive.read_bytes()
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    assert sorted(m.name for m in members) == sorted(f"bundle/{p.name}" for p in bundle.iterdir())
    assert all(m.isfile() and m.uid == 0 and m.uname == "" for m in members)
    modes = {m.name: m.mode for m in members}
    assert modes["bundle/runner.py"] == 0o755 and modes["bundle/manifest.json"] == 0o644
    assert verify_bundle(archive).ok


def crafted(path: Path, *members: tuple[str, str, bytes | str]) -> Path:
    """A .tar.gz of (name, kind, payload-or-link-target) members."""
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "chardev": tarfile.CHRTYPE,
                         "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = payload
            tar.addfile(info)
    return path


MANIFEST_OK = ("bundle/manifest.json", "file", b"{}")
MALICIOUS = {
    "absolute path": [MANIFEST_OK, ("/tmp/edgekd-pwned", "file", b"x")],
    "dot-dot": [MANIFEST_OK, ("bundle/../../edgekd-pwned", "file", b"x")],
    "symlink": [("bundle/model.onnx", "symlink", "/etc/passwd"), MANIFEST_OK],
    "hardlink": [("bundle/model.onnx", "hardlink", "/etc/passwd"), MANIFEST_OK],
    "device": [MANIFEST_OK, ("bundle/tty", "chardev", "")],
    "fifo": [MANIFEST_OK, ("bundle/pipe", "fifo", "")],
    "backslash": [MANIFEST_OK, ("bundle\\..\\..\\edgekd-pwned", "file", b"x")],
    "duplicate": [MANIFEST_OK, ("bundle/manifest.json", "file", b"{\"other\": 1}")],
}
EXPECTED_REASON = {"absolute path": "an absolute path", "dot-dot": "a path with '..'", "symlink": "a symbolic link",
                   "hardlink": "a hard link", "device": "a device file", "fifo": "a FIFO",
                   "backslash": "a path with a backslash", "duplicate": "listed twice"}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_a_malicious_archive_is_refused_naming_the_member(tmp_path, case):
    archive = crafted(tmp_path / f"{case}.tar.gz", *MALICIOUS[case])
    bad = next(n for n, *_ in MALICIOUS[case] if n != "bundle/manifest.json" or case == "duplicate")
    result = runner.invoke(app, ["verify", str(archive)])
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith(f"error: refusing to extract {archive.name}: member '{bad}' is {EXPECTED_REASON[case]}")
    assert "\n" not in err
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(InputError):
        safe_extract(archive, dest)
    assert not list(dest.iterdir())  # checked before anything is written
    assert not (tmp_path.parent / "edgekd-pwned").exists()


def test_a_damaged_or_foreign_archive_is_bad_input(tmp_path):
    good = crafted(tmp_path / "foreign.tar.gz", ("data/readme.txt", "file", b"hello"))
    (tmp_path / "truncated.tar.gz").write_bytes(good.read_bytes()[:20])
    (tmp_path / "plain.tar.gz").write_text("not gzip at all")
    for name, words in [("foreign.tar.gz", "no single folder with a manifest.json"),
                        ("truncated.tar.gz", "damaged"), ("plain.tar.gz", "not a readable tar archive")]:
        result = runner.invoke(app, ["verify", str(tmp_path / name)])
        assert result.exit_code == 2, (name, result.output)
        assert words in result.stderr, (name, result.stderr)


def test_logits_compare_within_tolerance_and_forgive_only_near_ties():
    expected = np.array([[2.0, -2.0], [0.00001, 0.0], [-1.0, 3.0]], dtype=np.float32)
    ok = compare_logits(OutputCheck("onnxruntime", "model.onnx"), expected, expected.copy(), "fp32")
    assert ok.ok and ok.max_abs_diff == 0.0 and ok.allowed == pytest.approx(3e-4)
    tie = expected.copy()
    tie[1] = [0.0, 0.00002]  # flips a numerical tie, within the allowed difference
    assert compare_logits(OutputCheck("onnxruntime", "model.onnx"), expected, tie, "fp32").ok
    drift = expected + np.float32(1e-3)  # fp32 bound is 1e-4 × max(1, 3): exceeded
    res = compare_logits(OutputCheck("onnxruntime", "model.onnx"), expected, drift, "fp32")
    assert not res.ok and res.agreement == 1.0
    assert compare_logits(OutputCheck("openvino", "model.xml"), expected, drift, "int8").ok  # int8: 0.05 × 3
    flipped = expected.copy()
    flipped[0] = [-2.0, 2.0]
    res = compare_logits(OutputCheck("onnxruntime", "model.onnx"), expected, flipped, "int8")
    assert not res.ok and res.agreement == pytest.approx(2 / 3)
    assert not compare_logits(OutputCheck("onnxruntime", "model.onnx"), expected, expected[:2], "fp32").ok
