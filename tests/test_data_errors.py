"""Bad data: every malformed .npz or image folder gives one DataError line naming the array and
index, or the file, and the fix; limits are checked from headers before anything is decoded."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd.config import Preprocessing
from edgekd.data.folder import load_folder
from edgekd.data.npz import load_npz
from edgekd.errors import DataError, EdgekdError

from .test_data import SPLITS, _arrays, _folder, _png, _write_npz


# ---------------------------------------------------------------- npz
def test_npz_class_names_fix_the_class_count_even_when_labels_stop_short(tmp_path):
    arrays = _arrays()
    arrays["class_names"] = np.array(["normal", "pneumonia", "covid"])  # no label is 2
    with pytest.raises(DataError, match=r"class 2 \('covid'\) has no train samples"):
        load_npz(_write_npz(tmp_path, arrays), Preprocessing())


def test_npz_a_class_missing_from_a_split_is_refused_with_the_reason(tmp_path):
    arrays = _arrays()
    arrays["val_labels"][:] = 0  # val has only class 0: AUC undefined
    with pytest.raises(DataError) as e:
        load_npz(_write_npz(tmp_path, arrays), Preprocessing())
    assert "class 1 ('class_1') has no val samples" in str(e.value) and "AUC" in str(e.value)


def test_npz_max_samples_that_drops_a_class_says_raise_it(tmp_path):
    arrays = _arrays(n=(12, 40, 6))
    arrays["val_labels"][:, 0] = (np.arange(40) == 39).astype(np.uint8)  # one class-1 sample among 40
    path = _write_npz(tmp_path, arrays)
    load_npz(path, Preprocessing())  # the full split is fine
    with pytest.raises(DataError, match="raise --max-samples"):
        load_npz(path, Preprocessing(), max_samples=2)


def _break(kind: str, tmp_path: Path) -> tuple[Path, list[str]]:
    """Write one malformed file; return it and the words its error must mention."""
    a = _arrays()
    if kind == "missing_file":
        return tmp_path / "nope.npz", ["nope.npz", "not found"]
    if kind == "not_zip":
        p = tmp_path / "junk.npz"
        p.write_bytes(b"this is not a zip archive at all" * 10)
        return p, ["junk.npz", "not a zip file"]
    if kind == "truncated":
        p = _write_npz(tmp_path, a, "cut.npz")
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
        return p, ["cut.npz", "corrupt or truncated"]
    if kind == "missing_key":
        del a["val_labels"], a["test_images"]
        return _write_npz(tmp_path, a), ["val_labels", "test_images", "MedMNIST layout"]
    if kind == "rank":
        a["val_images"] = a["val_images"].reshape(6, -1)
        return _write_npz(tmp_path, a), ["val_images", "shape (6, 64)"]
    if kind == "length":
        a["train_labels"] = a["train_labels"][:-2]
        return _write_npz(tmp_path, a), ["train_labels", "10 labels", "12 images"]
    if kind == "nan":
        imgs = a["test_images"].astype(np.float32)
        imgs[0, 0, 0] = np.nan
        a["test_images"] = imgs
        return _write_npz(tmp_path, a), ["test_images", "NaN"]
    if kind == "negative":
        a["val_labels"] = a["val_labels"].astype(np.int64) - 1
        return _write_npz(tmp_path, a), ["val_labels", "negative"]
    if kind == "one_class":
        for s in SPLITS:
            a[f"{s}_labels"][:] = 0
        return _write_npz(tmp_path, a), ["fewer than 2 classes"]
    if kind == "empty_split":
        a["test_images"], a["test_labels"] = a["test_images"][:0], a["test_labels"][:0]
        return _write_npz(tmp_path, a), ["test_images", "0 samples"]
    if kind == "unit_float":
        a["train_images"] = a["train_images"].astype(np.float32) / 255
        return _write_npz(tmp_path, a), ["train_images", "[0, 1]"]
    if kind == "class_names":
        a["class_names"] = np.array(["a"])
        return _write_npz(tmp_path, a), ["train_labels", "label 1 at index 1", "1 names"]
    if kind == "nan_index":
        imgs = a["val_images"].astype(np.float64)
        imgs[4, 2, 3] = np.inf
        a["val_images"] = imgs
        return _write_npz(tmp_path, a), ["val_images", "image 4", "NaN/Inf"]
    if kind == "pixel_range":
        imgs = a["train_images"].astype(np.int16)
        imgs[7, 0, 0] = 300
        a["train_images"] = imgs
        return _write_npz(tmp_path, a), ["train_images", "image 7", "300", "0-255"]
    if kind == "complex":
        a["test_images"] = a["test_images"].astype(np.complex64)
        return _write_npz(tmp_path, a), ["test_images", "complex64", "uint8"]
    if kind == "strings":
        a["test_images"] = np.full((6, 8, 8), "x")
        return _write_npz(tmp_path, a), ["test_images", "<U1", "uint8"]
    if kind == "object":
        a["train_labels"] = np.array([0, 1] * 6, dtype=object)
        return _write_npz(tmp_path, a), ["train_labels", "pickled Python objects", "allow_pickle=False"]
    if kind == "object_names":
        a["class_names"] = np.array(["normal", "pneumonia"], dtype=object)
        return _write_npz(tmp_path, a), ["class_names", "dtype=str"]
    if kind == "fractional_label":
        a["val_labels"] = a["val_labels"].astype(np.float32)
        a["val_labels"][3] = 0.5
        return _write_npz(tmp_path, a), ["val_labels", "0.5 at index 3"]
    if kind == "nan_label":
        a["val_labels"] = a["val_labels"].astype(np.float32)
        a["val_labels"][2] = np.nan
        return _write_npz(tmp_path, a), ["val_labels", "nan at index 2"]
    if kind == "raw_id_label":
        a["test_labels"] = a["test_labels"].astype(np.int64)
        a["test_labels"][5] = 123456789
        return _write_npz(tmp_path, a), ["test_labels", "123456789 at index 5", "class indices"]
    if kind == "label_gap":
        for s in SPLITS:
            a[f"{s}_labels"] = a[f"{s}_labels"] * 2  # classes 0 and 2: class 1 never appears
        return _write_npz(tmp_path, a), ["class 1", "no train samples", "no gaps"]
    if kind == "zero_width":
        a["val_images"] = np.zeros((6, 8, 0), np.uint8)
        return _write_npz(tmp_path, a), ["val_images", "(6, 8, 0)", "H, W >= 1"]
    if kind == "bool_images":
        a["val_images"] = a["val_images"] > 127
        return _write_npz(tmp_path, a), ["val_images", "bool", "uint8"]
    if kind == "multilabel":
        a["train_labels"] = np.zeros((12, 3), np.uint8)
        return _write_npz(tmp_path, a), ["train_labels", "multi-label"]
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    ["missing_file", "not_zip", "truncated", "missing_key", "rank", "length", "nan", "negative",
     "one_class", "empty_split", "unit_float", "class_names", "multilabel", "nan_index", "pixel_range", "complex",
     "strings", "object", "object_names", "fractional_label", "nan_label", "raw_id_label", "label_gap", "zero_width",
     "bool_images"],
)
def test_npz_errors_are_one_line_and_name_the_problem(tmp_path, kind):
    path, words = _break(kind, tmp_path)
    with pytest.raises(DataError) as e:
        load_npz(path, Preprocessing())
    msg = str(e.value)
    assert all(w in msg for w in words), msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "env, value, words",
    [
        ("EDGEKD_MAX_IMAGE_SIDE", "6", ["8×8", "6-pixel side limit", "EDGEKD_MAX_IMAGE_SIDE"]),
        ("EDGEKD_MAX_IMAGES", "20", ["24 images", "limit of 20", "EDGEKD_MAX_IMAGES"]),
        ("EDGEKD_MAX_DATA_MB", "1", ["decompresses to", "1.0 MiB limit", "EDGEKD_MAX_DATA_MB"]),
        ("EDGEKD_MAX_IMAGES", "lots", ["EDGEKD_MAX_IMAGES='lots'", "positive integer"]),
    ],
)
def test_npz_limits_are_checked_from_headers(tmp_path, monkeypatch, env, value, words):
    arrays = _arrays()
    if env == "EDGEKD_MAX_DATA_MB":  # a zip bomb in miniature: 2 MiB of zeros compress to a few KiB
        arrays["train_images"] = np.zeros((12, 512, 512), np.uint8)
        arrays["val_images"] = arrays["test_images"] = np.zeros((6, 512, 512), np.uint8)
        path = tmp_path / "bomb.npz"
        np.savez_compressed(path, **arrays)
        assert path.stat().st_size < 100_000
    else:
        path = _write_npz(tmp_path, arrays)
    monkeypatch.setenv(env, value)
    with pytest.raises(Exception) as e:
        load_npz(path, Preprocessing())
    assert isinstance(e.value, EdgekdError)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_npz_member_that_is_not_an_array_is_named(tmp_path):
    import zipfile

    path = _write_npz(tmp_path, _arrays())
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("class_names", b"normal,pneumonia")  # not a .npy member: np.load would hand back bytes
    with pytest.raises(DataError, match="'class_names' is not a numpy array"):
        load_npz(path, Preprocessing())


def test_npz_holding_a_plain_npy_is_rejected(tmp_path):
    path = tmp_path / "single.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(DataError, match="single array"):
        load_npz(path, Preprocessing())


# ---------------------------------------------------------------- folders
@pytest.mark.parametrize("kind", ["missing_split", "empty_class", "mismatch", "corrupt", "no_classes", "one_class"])
def test_folder_errors_name_the_problem(tmp_path, kind):
    root = _folder(tmp_path)
    if kind == "missing_split":
        import shutil

        shutil.rmtree(root / "val")
        words = ["'val/'", "train"]
    elif kind == "empty_class":
        for p in (root / "test" / "pneumonia").iterdir():
            p.unlink()
        words = ["test/pneumonia", "empty"]
    elif kind == "mismatch":
        (root / "val" / "pneumonia").rename(root / "val" / "covid")
        words = ["val", "missing: ['pneumonia']", "extra: ['covid']"]
    elif kind == "corrupt":
        (root / "train" / "pneumonia" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        words = ["train/pneumonia/001.png"]
    elif kind == "no_classes":
        import shutil

        for c in ("normal", "pneumonia"):
            shutil.rmtree(root / "train" / c)
        words = ["no class folders"]
    else:
        import shutil

        shutil.rmtree(root / "train" / "pneumonia")
        words = ["only one class"]
    with pytest.raises(DataError) as e:
        load_folder(root, Preprocessing())
    assert all(w in str(e.value) for w in words), str(e.value)


def test_folder_truncated_image_is_named(tmp_path):
    root = _folder(tmp_path, size=64)
    bad = root / "test" / "normal" / "002.png"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DataError, match="002.png"):
        load_folder(root, Preprocessing())


@pytest.mark.parametrize("side", [20, 200])  # 200×200 is over twice 16² pixels: PIL's own bomb check fires first
def test_folder_image_over_the_side_limit_is_named_before_decoding(tmp_path, monkeypatch, side):
    root = _folder(tmp_path)
    _png(root / "val" / "normal" / "huge.png", np.zeros((side, side), np.uint8))
    monkeypatch.setenv("EDGEKD_MAX_IMAGE_SIDE", "16")
    with pytest.raises(DataError) as e:
        load_folder(root, Preprocessing(image_size=16))
    assert "val/normal/huge.png" in str(e.value) and "16-pixel side limit" in str(e.value), str(e.value)


def test_folder_with_more_images_than_the_limit(tmp_path, monkeypatch):
    root = _folder(tmp_path)
    monkeypatch.setenv("EDGEKD_MAX_IMAGES", "17")
    with pytest.raises(DataError, match="18 images, over the limit of 17"):
        load_folder(root, Preprocessing())


def test_folder_max_samples_that_drops_a_class_says_raise_it(tmp_path):
    root = _folder(tmp_path, per_class=1)
    for i in range(1, 8):
        _png(root / "test" / "normal" / f"x{i}.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="'pneumonia'.*raise --max-samples"):
        load_folder(root, Preprocessing(), max_samples=1)


def test_folder_file_name_with_a_newline_still_gives_one_line(tmp_path):
    root = _folder(tmp_path)
    (root / "train" / "normal" / "bad\nname.png").write_bytes(b"not a png")
    with pytest.raises(DataError) as e:
        load_folder(root, Preprocessing())
    assert "\n" not in str(e.value) and "bad\\nname.png" in str(e.value)


def test_unreadable_files_and_folders_are_named(tmp_path, monkeypatch):
    npz = _write_npz(tmp_path, _arrays())
    root = _folder(tmp_path)
    real_open, real_iterdir = open, Path.iterdir

    def deny_open(file, *a, **k):
        if str(file) == str(npz):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **k)

    def deny_iterdir(self):
        if self.name == "normal" and self.parent.name == "val":
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr("builtins.open", deny_open)  # what chmod 000 does for a non-root user
    monkeypatch.setattr(Path, "iterdir", deny_iterdir)
    with pytest.raises(DataError, match="cannot read .*d.npz \\(Permission denied\\)"):
        load_npz(npz, Preprocessing())
    with pytest.raises(DataError, match="cannot list .*val/normal \\(Permission denied\\)"):
        load_folder(root, Preprocessing())
