"""Manifests (edgekd/data/manifest.py) and patient-level splits (edgekd/data/splits.py)."""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.config import DataOptions, Preprocessing
from edgekd.data import load_dataset
from edgekd.data.dicom import read_dicom
from edgekd.data.manifest import load_manifest
from edgekd.data.splits import make_group_splits
from edgekd.errors import DataError

from ._dicom import write_dicom

pytest.importorskip("pydicom")


def _png(path: Path, pixels: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _dicom_set(root: Path, patients: int = 12, per_patient: int = 2, split: bool = True) -> list[dict]:
    """``patients`` patients, alternating labels, each with ``per_patient`` 12-bit DICOM files; a given split by patient."""
    rows, rng = [], np.random.default_rng(0)
    for p in range(patients):
        label = ["normal", "pneumonia"][p % 2]
        s = ("train", "train", "val", "test")[(p // 2) % 4] if split else None
        for i in range(per_patient):
            name = f"p{p:02d}/img{i}.dcm"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            write_dicom(root / name, rng.integers(0, 4096, (8, 8)).astype(np.uint16), bits_stored=12,
                        photometric="MONOCHROME1" if p % 3 == 0 else "MONOCHROME2", patient_id=f"P{p:02d}")
            rows.append({"file": name, "label": label, **({"split": s} if split else {}), "patient_id": f"P{p:02d}"})
    return rows


# ---------------------------------------------------------------- reading
def test_dicom_manifest_with_given_splits(tmp_path):
    rows = _dicom_set(tmp_path)
    data = load_manifest(_csv(tmp_path / "labels.csv", rows), Preprocessing(mean=(0.0,), std=(1.0,)))
    assert data.format == "dicom" and data.channels == 1 and data.image_size == (8, 8)
    assert data.class_names == ["normal", "pneumonia"]
    assert data.split_sizes() == {"train": 16, "val": 4, "test": 4}
    assert data.extra["patients"] == {"train": 8, "val": 2, "test": 2}
    assert data.extra["patient_ids"]["val"] == ["P04", "P05"] and data.extra["patient_ids"]["test"] == ["P06", "P07"]
    assert data.extra["dicom"]["photometric"] == {"MONOCHROME1": 8, "MONOCHROME2": 16}
    # exactly read_dicom's pixels, then x/255 -> (x - 0) / 1: the model sees the [0, 1] image
    first = tmp_path / rows[0]["file"]
    torch.testing.assert_close(data.train.images[0, 0], torch.from_numpy(read_dicom(first)), atol=1e-6, rtol=0)
    assert data.sha256 and len(data.sha256) == 64


def test_json_manifest_of_png_images_and_a_folder_holding_a_manifest(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(12):
        name = f"img/{i}.png"
        _png(tmp_path / name, rng.integers(0, 256, (6, 6), dtype=np.uint8))
        rows.append({"file": name, "label": i % 2, "split": ["train", "train", "val", "test"][(i // 2) % 4]})
    (tmp_path / "manifest.json").write_text(json.dumps(rows))
    data = load_dataset(tmp_path, Preprocessing())  # a folder with manifest.json and no train/
    assert data.format == "manifest" and data.class_names == ["0", "1"] and data.split_sizes() == {"train": 8, "val": 2, "test": 2}
    assert "patients" not in data.extra  # no patient column: nothing claimed


def test_mixed_png_and_dicom_colour_makes_everything_rgb(tmp_path):
    rows = _dicom_set(tmp_path, patients=8, per_patient=1)
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    _png(tmp_path / "red.png", rgb)
    rows[0] = {**rows[0], "file": "red.png"}
    data = load_manifest(_csv(tmp_path / "m.csv", rows), Preprocessing(mean=(0.0,), std=(1.0,)))
    assert data.channels == 3 and data.format == "manifest"
    red = data.train.images[0]
    assert red[0].min() == 1.0 and red[1:].max() == 0.0
    gray = data.train.images[1]
    torch.testing.assert_close(gray[0], gray[2])  # grayscale DICOM repeated into R, G, B


def test_window_and_frame_options_reach_the_dicom_reader(tmp_path):
    rows = _dicom_set(tmp_path, patients=8, per_patient=1)
    path = _csv(tmp_path / "m.csv", rows)
    plain = load_manifest(path, Preprocessing(mean=(0.0,), std=(1.0,)))
    windowed = load_manifest(path, Preprocessing(mean=(0.0,), std=(1.0,)), options=DataOptions(window=(2048, 1001)))
    assert not torch.equal(plain.train.images, windowed.train.images)
    assert windowed.extra["dicom"]["voi"] == {"window 2048/1001": 8} and windowed.extra["dicom"]["window"] == [2048, 1001]
    with pytest.raises(DataError, match=r"has 1 frame\(s\), so --frame 1 does not exist"):
        load_manifest(path, Preprocessing(), options=DataOptions(frame=1))


# ---------------------------------------------------------------- splits
def test_group_splits_keep_patients_apart_are_stratified_and_seeded():
    rng = np.random.default_rng(0)
    groups, labels = [], []
    for p in range(300):  # 300 patients, 1-4 images each, 30 % positive patients
        k, lab = int(rng.integers(1, 5)), int(rng.random() < 0.3)
        groups += [f"P{p}"] * k
        labels += [lab] * k
    labels = np.array(labels)
    splits = make_group_splits(groups, labels, 2, seed=0)
    where: dict[str, set] = {}
    for g, s in zip(groups, splits):
        where.setdefault(g, set()).add(s)
    assert all(len(v) == 1 for v in where.values())  # no patient on two sides
    n = Counter(splits)
    for s, f in zip(("train", "val", "test"), (0.7, 0.15, 0.15)):
        assert abs(n[s] / len(groups) - f) < 0.02, (s, n)
        share = labels[np.array(splits) == s].mean()
        assert abs(share - labels.mean()) < 0.02, (s, share, labels.mean())  # stratified
    assert make_group_splits(groups, labels, 2, seed=0) == splits
    assert make_group_splits(groups, labels, 2, seed=1) != splits
    other = Counter(make_group_splits(groups, labels, 2, fractions=(0.5, 0.25, 0.25), seed=0))
    assert abs(other["train"] / len(groups) - 0.5) < 0.02


def test_a_class_with_three_patients_reaches_every_split():
    groups = [f"P{p}" for p in range(60)] + ["R1", "R2", "R2", "R3"]  # 60 common patients, 3 with the rare class
    labels = np.array([p % 2 for p in range(60)] + [2, 2, 2, 2])
    for seed in range(5):
        splits = np.array(make_group_splits(groups, labels, 3, seed=seed))
        assert {s for s in splits[labels == 2]} == {"train", "val", "test"}, seed


def test_split_by_patient_id_end_to_end(tmp_path):
    rows = _dicom_set(tmp_path, patients=40, per_patient=2, split=False)
    path = _csv(tmp_path / "m.csv", rows)
    data = load_manifest(path, Preprocessing(), options=DataOptions(split_by="patient_id"), seed=3)
    ids = data.extra["patient_ids"]
    assert sum(data.extra["patients"].values()) == 40
    assert not (set(ids["train"]) & set(ids["val"]) or set(ids["train"]) & set(ids["test"]) or set(ids["val"]) & set(ids["test"]))
    assert data.extra["split_by"] == "patient_id" and data.extra["split_fractions"] == [0.7, 0.15, 0.15]
    assert data.split_sizes() == {"train": 56, "val": 12, "test": 12}
    again = load_manifest(path, Preprocessing(), options=DataOptions(split_by="patient_id"), seed=3)
    assert again.extra["patient_ids"] == ids


def test_a_given_split_that_leaks_a_patient_is_refused(tmp_path):
    rows = _dicom_set(tmp_path)
    rows[1] = {**rows[1], "split": "test"}  # patient P00's second image moved to test
    with pytest.raises(DataError) as e:
        load_manifest(_csv(tmp_path / "m.csv", rows), Preprocessing())
    msg = str(e.value)
    assert "patient_id P00 is in train and test" in msg and "--split-by patient_id" in msg and "\n" not in msg


# ---------------------------------------------------------------- bad manifests
@pytest.mark.parametrize("case, words", [
    ("no_label", ["no label column", "file,label"]),
    ("missing_file", ["line 2", "nope.dcm", "not found"]),
    ("duplicate", ["twice", "lines 2 and 3"]),
    ("no_split", ["no split column", "--split-by patient_id"]),
    ("bad_split", ["line 2", "'tran'", "did you mean 'train'"]),
    ("split_and_split_by", ["split column and --split-by"]),
    ("unknown_column", ["--split-by patient", "no such column", "did you mean 'patient_id'"]),
    ("corrupt_dicom", ["cannot decode DICOM file", "p00/img0.dcm", "not a DICOM file"]),
    ("split_by_file_leaks", ["--split-by file", "is in", "pass --split-by patient_id"]),
])
def test_bad_manifests_give_one_line_naming_the_problem(tmp_path, case, words):
    rows = _dicom_set(tmp_path, patients=8, per_patient=1)
    opts = DataOptions()
    if case == "no_label":
        rows = [{k: v for k, v in r.items() if k != "label"} for r in rows]
    elif case == "missing_file":
        rows[0] = {**rows[0], "file": "nope.dcm"}
    elif case == "duplicate":
        rows[1] = {**rows[1], "file": rows[0]["file"]}
    elif case == "no_split":
        rows = [{k: v for k, v in r.items() if k != "split"} for r in rows]
    elif case == "bad_split":
        rows[0] = {**rows[0], "split": "tran"}
    elif case == "split_and_split_by":
        opts = DataOptions(split_by="patient_id")
    elif case == "unknown_column":
        rows = [{k: v for k, v in r.items() if k != "split"} for r in rows]
        opts = DataOptions(split_by="patient")
    elif case == "split_by_file_leaks":
        rows = [{**{k: v for k, v in r.items() if k != "split"}, "patient_id": f"P{i // 4}"} for i, r in enumerate(rows)]
        opts = DataOptions(split_by="file")
    elif case == "corrupt_dicom":
        (tmp_path / rows[0]["file"]).write_bytes(b"garbage" * 50)
    with pytest.raises(DataError) as e:
        load_manifest(_csv(tmp_path / "m.csv", rows), Preprocessing(), options=opts)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_manifest_options_on_other_data_are_refused(tmp_path):
    np.savez(tmp_path / "d.npz", **{f"{s}_{k}": np.zeros((2, 4, 4) if k == "images" else 2, np.uint8)
                                    for s in ("train", "val", "test") for k in ("images", "labels")})
    with pytest.raises(DataError, match="--split-by applies to a manifest"):
        load_dataset(tmp_path / "d.npz", Preprocessing(), options=DataOptions(split_by="patient_id"))


def test_data_options_round_trip_through_report_json():
    from dataclasses import asdict

    from edgekd.config import CompressConfig

    opts = DataOptions(window=(40.0, 400.0), frame=2, split_by="patient_id", split_fractions=(0.6, 0.2, 0.2))
    cfg = CompressConfig(data_options=opts)
    assert DataOptions.from_dict(json.loads(json.dumps(cfg.to_dict()))["data_options"]) == opts
    assert DataOptions.from_dict(None) == DataOptions() and asdict(DataOptions())["window"] is None
