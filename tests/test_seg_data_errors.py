"""Bad segmentation data: every malformed .npz or folder gives one DataError line naming the file
(and the array and mask index, or the image/mask file) and the fix."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd.config import Preprocessing
from edgekd.data.seg_folder import load_seg_folder
from edgekd.data.seg_npz import load_seg_npz
from edgekd.errors import DataError

from .test_seg_data import png, seg_arrays, seg_folder, write_npz


def _one_line(exc: pytest.ExceptionInfo, words: list[str]) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, f"{w!r} not in: {msg}"


# ---------------------------------------------------------------- npz
def _break_npz(kind: str, tmp_path: Path) -> tuple[Path, list[str]]:
    a = seg_arrays()
    if kind == "size_mismatch":
        a["val_masks"] = np.zeros((4, 8, 9), np.uint8)
        return write_npz(tmp_path, a), ["seg.npz", "'val_masks' masks are 8×9", "'val_images' are 8×8"]
    if kind == "count_mismatch":
        a["test_masks"] = a["test_masks"][:3]
        return write_npz(tmp_path, a), ["seg.npz", "'test_masks' has 3 masks", "4 images"]
    if kind == "value_over_k":  # K fixed by class_names (otherwise a 3 would just mean K = 4)
        a["class_names"] = np.array(["background", "lesion"])
        a["val_masks"][2, 1, 1] = 3
        return write_npz(tmp_path, a), ["seg.npz: 'val_masks' mask 2", "value 3", "outside 0..1", "'class_names' count 2"]
    if kind == "negative":
        a["test_masks"] = a["test_masks"].astype(np.int16)
        a["test_masks"][1, 0, 0] = -1
        return write_npz(tmp_path, a), ["'test_masks' mask 1", "negative value -1"]
    if kind == "mixed_binary":
        a["train_masks"][a["train_masks"] == 1] = 255  # train 0/255, val and test 0/1
        return write_npz(tmp_path, a), ["mix 0/255", "'train_masks' mask 0", "'val_masks' mask 0", "0/255 or 0/1"]
    if kind == "soft_edges":
        a["val_masks"][1] *= 255
        a["val_masks"][1, 0, 0] = 128
        return write_npz(tmp_path, a), ["'val_masks' mask 1", "255 and other foreground values"]
    if kind == "grey_image_as_mask":
        a["train_masks"] = np.full((6, 8, 8), 300, np.uint16)
        return write_npz(tmp_path, a), ["'train_masks' mask 0", "value 300", "256-class limit"]
    if kind == "float_masks":
        a["val_masks"] = a["val_masks"].astype(np.float32)
        return write_npz(tmp_path, a), ["'val_masks' has dtype float32", "integers"]
    if kind == "one_hot":
        a["val_masks"] = np.zeros((4, 8, 8, 2), np.uint8)
        return write_npz(tmp_path, a), ["'val_masks' has shape (4, 8, 8, 2)", "argmax"]
    if kind == "missing_key":
        del a["test_masks"]
        return write_npz(tmp_path, a), ["seg.npz is missing test_masks", "test_images/test_masks"]
    if kind == "empty_split":
        a["val_images"], a["val_masks"] = a["val_images"][:0], a["val_masks"][:0]
        return write_npz(tmp_path, a), ["seg.npz", "'val_images' has 0 samples"]
    if kind == "corrupt":
        p = write_npz(tmp_path, a, "cut.npz")
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
        return p, ["cut.npz", "corrupt or truncated"]
    if kind == "single_array":
        p = tmp_path / "one.npz"
        with open(p, "wb") as f:
            np.save(f, a["train_masks"])
        return p, ["one.npz", "single array", "train_masks=..."]
    raise AssertionError(kind)


NPZ_CASES = ["size_mismatch", "count_mismatch", "value_over_k", "negative", "mixed_binary", "soft_edges",
             "grey_image_as_mask", "float_masks", "one_hot", "missing_key", "empty_split", "corrupt", "single_array"]


@pytest.mark.parametrize("kind", NPZ_CASES)
def test_bad_npz_gives_one_line_naming_the_array(kind, tmp_path):
    path, words = _break_npz(kind, tmp_path)
    with pytest.raises(DataError) as e:
        load_seg_npz(path, Preprocessing())
    _one_line(e, words)


def test_npz_value_at_or_over_a_given_num_classes(tmp_path):
    a = seg_arrays(values=(0, 1, 2))
    with pytest.raises(DataError) as e:
        load_seg_npz(write_npz(tmp_path, a), Preprocessing(), num_classes=2)
    _one_line(e, ["'train_masks' mask 0", "value 2", "outside 0..1", "give the right num_classes"])
    with pytest.raises(DataError, match="num_classes must be an integer"):
        load_seg_npz(write_npz(tmp_path, a), Preprocessing(), num_classes=1)


# ---------------------------------------------------------------- folder
def _break_folder(kind: str, tmp_path: Path) -> tuple[Path, list[str]]:
    root = seg_folder(tmp_path)
    if kind == "size_mismatch":
        png(root / "val" / "masks" / "002.png", np.zeros((8, 9), np.uint8))
        return root, ["mask val/masks/002.png", "is 8×9", "image val/images/002.png is 8×8"]
    if kind == "image_without_mask":
        (root / "train" / "masks" / "004.png").unlink()
        return root, ["image train/images/004.png", "has no mask", "train/masks/004.png"]
    if kind == "mask_without_image":
        (root / "test" / "images" / "001.png").unlink()
        return root, ["mask test/masks/001.png", "has no image"]
    if kind == "value_over_k":
        mask = np.zeros((8, 8), np.uint8)
        mask[3, 3] = 1
        mask[0, 0] = 255  # 0/1 elsewhere, 0/1/255 here
        png(root / "test" / "masks" / "003.png", mask)
        return root, ["mask test/masks/003.png", "255 and other foreground values"]
    if kind == "mixed_binary":
        png(root / "val" / "masks" / "000.png", np.full((8, 8), 255, np.uint8))  # others are 0/1
        return root, ["mix 0/255", "val/masks/000.png", "train/masks/000.png"]
    if kind == "empty_split":
        for p in [*(root / "val" / "images").iterdir(), *(root / "val" / "masks").iterdir()]:
            p.unlink()
        return root, ["empty split val/", "val/images/", "val/masks/"]
    if kind == "no_masks_folder":
        for p in (root / "test" / "masks").iterdir():
            p.unlink()
        (root / "test" / "masks").rmdir()
        return root, ["no 'test/masks/' folder"]
    if kind == "unreadable_mask":
        (root / "train" / "masks" / "001.png").write_bytes(b"not a png at all")
        return root, ["cannot read image train/masks/001.png", "remove or re-export"]
    if kind == "rgb_mask":
        png(root / "train" / "masks" / "002.png", np.zeros((8, 8, 3), np.uint8))
        return root, ["mask train/masks/002.png", "has mode RGB", "single-channel"]
    if kind == "jpeg_mask":
        (root / "val" / "masks" / "001.png").unlink()
        png(root / "val" / "masks" / "001.jpg", np.zeros((8, 8), np.uint8))
        return root, ["mask val/masks/001.jpg", "JPEG", "PNG"]
    if kind == "same_stem_twice":
        png(root / "train" / "images" / "000.bmp", np.zeros((8, 8), np.uint8))
        return root, ["train/images/", "two files named '000'", "000.bmp", "000.png"]
    if kind == "missing_root":
        return tmp_path / "nowhere", ["nowhere", "not found"]
    raise AssertionError(kind)


FOLDER_CASES = ["size_mismatch", "image_without_mask", "mask_without_image", "value_over_k", "mixed_binary",
                "empty_split", "no_masks_folder", "unreadable_mask", "rgb_mask", "jpeg_mask", "same_stem_twice",
                "missing_root"]


@pytest.mark.parametrize("kind", FOLDER_CASES)
def test_bad_folder_gives_one_line_naming_the_file(kind, tmp_path):
    root, words = _break_folder(kind, tmp_path)
    with pytest.raises(DataError) as e:
        load_seg_folder(root, Preprocessing())
    _one_line(e, words)


def test_folder_value_over_a_given_num_classes_names_the_mask(tmp_path):
    root = seg_folder(tmp_path)
    mask = np.zeros((8, 8), np.uint8)
    mask[2, 2] = 2
    png(root / "val" / "masks" / "003.png", mask)
    with pytest.raises(DataError) as e:
        load_seg_folder(root, Preprocessing(), num_classes=2)
    _one_line(e, ["mask val/masks/003.png", "value 2", "outside 0..1"])
    assert load_seg_folder(root, Preprocessing()).num_classes == 3  # inferred instead
