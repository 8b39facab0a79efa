"""Segmentation datasets: the .npz and folder readers, mask rules, nearest-neighbour mask resize
(malformed data: tests/test_seg_data_errors.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgekd._io import sha256_file, sha256_tree
from edgekd.config import Preprocessing
from edgekd.data import Split
from edgekd.data.preprocess import preprocess
from edgekd.data.seg_folder import load_seg_folder
from edgekd.data.seg_npz import load_seg_npz
from edgekd.data.segmentation import (
    SegDataset,
    SegSplit,
    load_segmentation,
    resize_masks,
)
from edgekd.errors import DataError

SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------- helpers
def seg_arrays(n=(6, 4, 4), size=8, rgb=False, values=(0, 1), seed=0) -> dict[str, np.ndarray]:
    """Random images and masks; every split's first mask holds every value in ``values``."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, k in zip(SPLITS, n):
        shape = (k, size, size, 3) if rgb else (k, size, size)
        out[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        masks = rng.choice(np.array(values, dtype=np.uint8), (k, size, size))
        masks[0, 0, : len(values)] = values
        out[f"{split}_masks"] = masks
    return out


def write_npz(tmp_path: Path, arrays: dict, name="seg.npz") -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def png(path: Path, pixels: np.ndarray, mode: str | None = None) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(pixels)
    if mode == "P":
        img = img.convert("P")  # an L image as a palette image: the indices are the grey values
    img.save(path)


def seg_folder(tmp_path: Path, arrays: dict | None = None, image_ext=".png") -> Path:
    """Write ``arrays`` (default :func:`seg_arrays`) as root/{split}/{images,masks}/NNN.ext."""
    arrays = arrays or seg_arrays()
    root = tmp_path / "seg"
    for s in SPLITS:
        for i, (img, mask) in enumerate(zip(arrays[f"{s}_images"], arrays[f"{s}_masks"])):
            png(root / s / "images" / f"{i:03d}{image_ext}", img)
            png(root / s / "masks" / f"{i:03d}.png", mask)
    return root


# ---------------------------------------------------------------- npz
def test_npz_round_trip_images_preprocessed_and_masks_kept(tmp_path):
    arrays = seg_arrays(values=(0, 1, 2))
    path = write_npz(tmp_path, arrays)
    ds = load_seg_npz(path, Preprocessing())
    assert isinstance(ds, SegDataset) and ds.format == "npz" and ds.task == "segmentation"
    assert ds.num_classes == 3 and ds.channels == 1 and ds.image_size == (8, 8)
    assert ds.split_sizes() == {"train": 6, "val": 4, "test": 4} and ds.sha256 == sha256_file(path)
    for s in SPLITS:
        split = getattr(ds, s)
        torch.testing.assert_close(split.images, preprocess(arrays[f"{s}_images"], Preprocessing()))
        assert split.masks.dtype == torch.int64 and split.masks.shape == (len(split), 8, 8)
        assert torch.equal(split.masks, torch.from_numpy(arrays[f"{s}_masks"].astype(np.int64)))
    assert ds.class_names == ["class_0", "class_1", "class_2"] and ds.extra["mask_values"] == "class indices"


def test_npz_binary_0_255_masks_become_0_1(tmp_path):
    arrays = seg_arrays(values=(0, 255))
    ds = load_seg_npz(write_npz(tmp_path, arrays), Preprocessing())
    assert ds.num_classes == 2 and ds.class_names == ["background", "foreground"]
    assert torch.equal(ds.val.masks, torch.from_numpy((arrays["val_masks"] // 255).astype(np.int64)))
    assert ds.extra["mask_values"] == "0/255 -> 0/1"


def test_npz_rgb_channel_last_masks_bool_masks_and_class_names(tmp_path):
    arrays = seg_arrays(rgb=True)
    arrays["train_masks"] = arrays["train_masks"][..., None]  # N×H×W×1
    arrays["val_masks"] = arrays["val_masks"].astype(bool)
    arrays["class_names"] = np.array(["background", "lesion", "cyst"])  # no mask holds 2
    ds = load_seg_npz(write_npz(tmp_path, arrays), Preprocessing())
    assert ds.channels == 3 and ds.train.images.shape == (6, 3, 8, 8) and ds.train.masks.shape == (6, 8, 8)
    assert ds.num_classes == 3 and ds.class_names == ["background", "lesion", "cyst"]
    assert set(ds.val.masks.unique().tolist()) == {0, 1}


def test_k_is_given_or_inferred_and_at_least_two(tmp_path):
    arrays = seg_arrays(values=(0,))
    assert load_seg_npz(write_npz(tmp_path, arrays), Preprocessing()).num_classes == 2  # all background
    arrays = seg_arrays(values=(0, 1))
    assert load_seg_npz(write_npz(tmp_path, arrays), Preprocessing(), num_classes=4).num_classes == 4


def test_npz_max_samples_keeps_the_rows_split_subset_keeps(tmp_path):
    arrays = seg_arrays(n=(10, 8, 8))
    path = write_npz(tmp_path, arrays)
    full = load_seg_npz(path, Preprocessing())
    capped = load_seg_npz(path, Preprocessing(), max_samples=3, seed=5)
    assert capped.split_sizes() == {"train": 3, "val": 3, "test": 3}
    sub = full.train.subset(3, seed=5)
    assert torch.equal(capped.train.masks, sub.masks) and torch.equal(capped.train.images, sub.images)
    rows = Split(torch.empty(10, 0), torch.arange(10)).subset(3, seed=5).labels  # classification picks alike
    assert torch.equal(sub.masks, full.train.masks[rows])


# ---------------------------------------------------------------- folder
def test_folder_round_trip_matches_the_npz_reader(tmp_path):
    arrays = seg_arrays(values=(0, 255))
    root = seg_folder(tmp_path, arrays)
    ds = load_seg_folder(root, Preprocessing())
    ref = load_seg_npz(write_npz(tmp_path, arrays), Preprocessing())
    assert ds.format == "folder" and ds.sha256 == sha256_tree(root) and ds.num_classes == 2
    for s in SPLITS:
        assert torch.equal(getattr(ds, s).masks, getattr(ref, s).masks)
        torch.testing.assert_close(getattr(ds, s).images, getattr(ref, s).images)


def test_folder_jpeg_images_pair_with_png_masks_and_palette_masks_read_as_indices(tmp_path):
    arrays = seg_arrays(values=(0, 1, 2))
    root = seg_folder(tmp_path, arrays, image_ext=".jpg")
    for i, mask in enumerate(arrays["test_masks"]):
        png(root / "test" / "masks" / f"{i:03d}.png", mask, mode="P")
    ds = load_seg_folder(root, Preprocessing())
    assert ds.num_classes == 3 and ds.test.images.shape == (4, 1, 8, 8)
    assert torch.equal(ds.test.masks, torch.from_numpy(arrays["test_masks"].astype(np.int64)))


def test_folder_mixed_sizes_resized_with_image_size(tmp_path):
    root = seg_folder(tmp_path, seg_arrays(values=(0, 3)))
    png(root / "val" / "images" / "big.png", np.zeros((12, 10), np.uint8))
    big_mask = np.zeros((12, 10), np.uint8)
    big_mask[4:8, 2:6] = 3
    png(root / "val" / "masks" / "big.png", big_mask)
    with pytest.raises(DataError, match="--image-size"):
        load_seg_folder(root, Preprocessing())
    ds = load_seg_folder(root, Preprocessing(image_size=16))
    assert ds.image_size == (16, 16) and ds.val.masks.shape == (5, 16, 16) and ds.num_classes == 4
    assert set(ds.val.masks.unique().tolist()) <= {0, 3}
    assert torch.equal(ds.val.masks[-1], torch.from_numpy(resize_masks(big_mask[None], (16, 16))[0]).long())


# ---------------------------------------------------------------- resizing and dispatch
@pytest.mark.parametrize("out_hw", [(16, 16), (5, 7), (8, 8), (3, 3), (31, 9)])
def test_nearest_resize_keeps_only_original_label_values_and_matches_torch(out_hw):
    rng = np.random.default_rng(1)
    masks = rng.choice(np.array([0, 3, 7], np.uint8), (4, 8, 8))
    out = resize_masks(masks, out_hw)
    assert out.shape == (4, *out_hw) and out.dtype == np.uint8
    assert set(np.unique(out).tolist()) <= {0, 3, 7}
    ref = F.interpolate(torch.from_numpy(masks).float()[:, None], size=out_hw, mode="nearest-exact")[:, 0]
    assert np.array_equal(out, ref.numpy().astype(np.uint8))


def test_dataset_image_size_resizes_masks_with_nearest(tmp_path):
    arrays = seg_arrays(values=(0, 2, 5))
    ds = load_seg_npz(write_npz(tmp_path, arrays), Preprocessing(image_size=13))
    assert ds.train.images.shape == (6, 1, 13, 13) and ds.train.masks.shape == (6, 13, 13)
    assert set(ds.train.masks.unique().tolist()) <= {0, 2, 5} and ds.extra["mask_resize"].startswith("nearest")


def test_seg_split_subset_and_len():
    split = SegSplit(torch.zeros(7, 1, 4, 4), torch.arange(7).view(7, 1, 1).expand(7, 4, 4).clone())
    assert len(split) == 7 and split.subset(None) is split and split.subset(9) is split
    sub = split.subset(3, seed=2)
    rows = Split(torch.zeros(7, 1), torch.arange(7)).subset(3, seed=2).labels
    assert len(sub) == 3 and torch.equal(sub.masks[:, 0, 0], rows)


def test_load_segmentation_picks_the_reader(tmp_path):
    arrays = seg_arrays()
    assert load_segmentation(write_npz(tmp_path, arrays), Preprocessing()).format == "npz"
    assert load_segmentation(seg_folder(tmp_path, arrays), Preprocessing()).format == "folder"
    assert load_segmentation(None, Preprocessing(image_size=32), max_samples=2).format == "synthetic"
    (tmp_path / "x.csv").write_text("a,b\n")
    cases = ((tmp_path / "x.csv", "not a supported segmentation dataset"), (tmp_path / "no", "does not exist"))
    for bad, words in cases:
        with pytest.raises(DataError, match=words):
            load_segmentation(bad, Preprocessing())
    with pytest.raises(DataError, match="2 classes"):
        load_segmentation(None, Preprocessing(), num_classes=3)
