"""``edgekd data inspect`` (edgekd/cli/data.py, edgekd/data/inspection.py) and ``python -m edgekd``."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekd.cli import app

from ._dicom import write_dicom

pytest.importorskip("pydicom")
runner = CliRunner()
LONG = "consolidation-with-pleural-effusion-right-lower-lobe"  # a class name longer than a narrow terminal


def _manifest(tmp_path: Path, patients: int = 20) -> Path:
    rows = []
    for p in range(patients):
        label = ["normal", LONG][p % 2]
        for i in range(2):
            name = f"p{p}/{i}.dcm"
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            px = np.full((12, 12), 1000 if p % 2 else 3000, np.uint16)
            write_dicom(tmp_path / name, px, bits_stored=12, RescaleSlope=1, RescaleIntercept=-1024,
                        patient_id=f"P{p}")
            rows.append({"file": name, "label": label, "patient_id": f"P{p}"})
    path = tmp_path / "manifest.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        img.verify()
        return img.size


def test_inspect_a_dicom_manifest_prints_counts_patients_ranges_and_writes_a_sheet(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    path = _manifest(tmp_path)
    sheet = tmp_path / "sheet.png"
    res = runner.invoke(app, ["data", "inspect", str(path), "--split-by", "patient_id", "--sheet", str(sheet),
                              "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    sizes = {k: v["images"] for k, v in s["splits"].items()}
    assert sum(sizes.values()) == 40 and sum(v["patients"] for v in s["splits"].values()) == 20
    for sp in s["splits"].values():
        assert sp["class_counts"]["normal"] == sp["class_counts"][LONG] == sp["images"] // 2  # stratified
        assert sp["dicom_stored_range"] in ([1000.0, 3000.0], [1000.0, 1000.0], [3000.0, 3000.0])
    # full 12-bit range after the rescale: stored 1000 -> 1000/4095 of 0-255; mean/std 0.5 -> 2x - 1
    assert s["splits"]["train"]["range_before"] == pytest.approx([1000 / 4095 * 255, 3000 / 4095 * 255], abs=1e-3)
    assert s["splits"]["train"]["range_after"] == pytest.approx([2 * 1000 / 4095 - 1, 2 * 3000 / 4095 - 1], abs=1e-5)
    assert s["format"] == "dicom" and s["split_by"] == "patient_id" and s["contact_sheet"] == str(sheet)
    assert _png_size(sheet)[0] > 200
    text = runner.invoke(app, ["data", "inspect", str(path), "--split-by", "patient_id", "--sheet", str(sheet)])
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    train = next(line for line in lines if line.startswith("train: "))
    assert f"{sizes['train']} images" in train and f"{LONG} {sizes['train'] // 2}" in train  # whole, on one line
    assert "DICOM stored 1000 … 3000" in train and "after rescale -24 … 1976" in train
    assert any(line.startswith("contact sheet: ") for line in lines) and "…" not in text.stdout.replace(" … ", "")


def test_inspect_an_npz_and_an_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for s, n in (("train", 10), ("val", 4), ("test", 6)):
        arrays[f"{s}_images"] = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
        arrays[f"{s}_labels"] = (np.arange(n) % 2).astype(np.uint8)
    np.savez(tmp_path / "d.npz", **arrays)
    res = runner.invoke(app, ["data", "inspect", str(tmp_path / "d.npz"), "--sheet", str(tmp_path / "a.png"),
                              "--json", "--image-size", "16"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert {k: v["images"] for k, v in s["splits"].items()} == {"train": 10, "val": 4, "test": 6}
    assert s["splits"]["test"]["class_counts"] == {"class_0": 3, "class_1": 3} and s["image_size"] == [16, 16]
    assert s["splits"]["train"]["patients"] is None and (tmp_path / "a.png").is_file()

    from PIL import Image

    for split in ("train", "val", "test"):
        for c in ("a", "b"):
            (tmp_path / "f" / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "f" / split / c / f"{i}.png")
    res = runner.invoke(app, ["data", "inspect", str(tmp_path / "f"), "--sheet", str(tmp_path / "b.png"), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["channels"] == 3 and s["splits"]["val"]["class_counts"] == {"a": 2, "b": 2}


def test_inspect_bad_input_is_one_line_and_exit_2(tmp_path):
    path = _manifest(tmp_path, patients=4)
    res = runner.invoke(app, ["data", "inspect", str(path), "--sheet", str(tmp_path / "x.png")])
    assert res.exit_code == 2
    (line,) = [ln for ln in res.output.splitlines() if ln.strip()]
    assert line.startswith("error: ") and "no split column" in line and "--split-by patient_id" in line
    res = runner.invoke(app, ["data", "inspect", str(path), "--split-by", "patient_id", "--window", "40"])
    assert res.exit_code == 2 and "--window C,W" in res.output


def test_python_dash_m_edgekd_runs_the_cli():
    res = subprocess.run([sys.executable, "-m", "edgekd", "--help"], capture_output=True, text=True, timeout=120,
                         check=False)
    assert res.returncode == 0, res.stderr
    assert "compress" in res.stdout and "data" in res.stdout and "python -m edgekd" in res.stdout
