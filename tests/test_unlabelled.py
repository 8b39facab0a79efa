"""--unlabelled: folders and images-only .npz files, preprocessed exactly like the labelled data;
every bad input is one DataError line with a fix."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgekd._io import sha256_file
from edgekd.config import Preprocessing
from edgekd.data import load_npz
from edgekd.data._base import Dataset
from edgekd.data.unlabelled import Unlabelled, load_unlabelled
from edgekd.errors import DataError

RNG = np.random.default_rng(0)


def _pixels(n: int, rgb: bool = False, side: int = 20) -> np.ndarray:
    return RNG.integers(0, 256, size=(n, side, side, 3) if rgb else (n, side, side), dtype=np.uint8)


def _labelled(tmp_path: Path, images: np.ndarray, pre: Preprocessing = Preprocessing()) -> Dataset:
    """A MedMNIST-layout file whose train split is ``images`` (both classes in every split)."""
    n = len(images)
    small = images[:4]
    arrays = {"train_images": images, "train_labels": np.arange(n) % 2,
              "val_images": small, "val_labels": np.arange(4) % 2, "test_images": small, "test_labels": np.arange(4) % 2}
    np.savez(tmp_path / "labelled.npz", **arrays)
    return load_npz(tmp_path / "labelled.npz", pre)


def _load(path: Path, ds: Dataset, **kw) -> Unlabelled:
    return load_unlabelled(path, ds.preprocessing, channels=ds.channels, image_size=ds.image_size, **kw)


def _bad(path: Path, ds: Dataset, match: str, **kw) -> str:
    with pytest.raises(DataError, match=match) as e:
        _load(path, ds, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


def _write_pngs(folder: Path, images: np.ndarray, nested: bool = True) -> list[Path]:
    paths = []
    for i, img in enumerate(images):
        p = folder / (f"patient{i % 3}" if nested else "") / f"{i:03d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p)
        paths.append(p)
    return sorted(paths, key=lambda q: q.relative_to(folder).as_posix())


# ---------------------------------------------------------------- happy paths

@pytest.mark.parametrize("pre", [Preprocessing(), Preprocessing(image_size=32, mean=(0.4,), std=(0.2,))])
def test_npz_images_preprocess_like_the_labelled_data(tmp_path, pre):
    px = _pixels(12)
    ds = _labelled(tmp_path, px, pre)
    np.savez(tmp_path / "u.npz", images=px)
    u = _load(tmp_path / "u.npz", ds)
    assert u.source == "npz" and u.count == u.found == 12 and u.notes == []
    assert u.images.dtype == torch.float32 and u.images.shape == ds.train.images.shape
    assert torch.equal(u.images, ds.train.images)
    assert u.sha256 == sha256_file(tmp_path / "u.npz")


def test_npz_train_images_only_its_train_split_is_read(tmp_path):
    px = _pixels(6)
    ds = _labelled(tmp_path, px)
    np.savez(tmp_path / "u.npz", train_images=px, val_images=_pixels(3), test_images=_pixels(3))
    u = _load(tmp_path / "u.npz", ds)
    assert u.count == 6 and torch.equal(u.images, ds.train.images)


def test_folder_recursive_preprocess_like_the_labelled_data(tmp_path):
    px = _pixels(9)
    ds = _labelled(tmp_path, px, Preprocessing(image_size=24))
    paths = _write_pngs(tmp_path / "unl", px)
    (tmp_path / "unl" / ".hidden.png").write_bytes(b"not read")
    (tmp_path / "unl" / "notes.txt").write_text("ignored")
    u = _load(tmp_path / "unl", ds)
    order = [int(p.stem) for p in paths]  # sorted by relative path
    assert u.source == "folder" and u.count == 9
    assert torch.equal(u.images, ds.train.images[order])


def test_folder_sha_covers_the_images_only(tmp_path):
    ds = _labelled(tmp_path, _pixels(4))
    paths = _write_pngs(tmp_path / "unl", _pixels(4), nested=False)
    a = _load(tmp_path / "unl", ds).sha256
    (tmp_path / "unl" / "README.md").write_text("not an image")
    assert _load(tmp_path / "unl", ds).sha256 == a
    Image.fromarray(_pixels(1)[0]).save(paths[0])
    assert _load(tmp_path / "unl", ds).sha256 != a


def test_cap_keeps_the_rows_split_subset_picks(tmp_path):
    px = _pixels(20)
    ds = _labelled(tmp_path, px)
    np.savez(tmp_path / "u.npz", images=px)
    u = _load(tmp_path / "u.npz", ds, max_images=5)
    assert (u.count, u.found) == (5, 20)
    assert torch.equal(u.images, ds.train.subset(5, 0).images)
    _bad(tmp_path / "u.npz", ds, "cap must be a positive integer", max_images=0)


# ---------------------------------------------------------------- channels

def test_gray_joins_rgb_data_repeated(tmp_path):
    rgb = _pixels(4, rgb=True)
    ds = _labelled(tmp_path, rgb)
    gray = _pixels(3)
    np.savez(tmp_path / "u.npz", images=gray)
    u = _load(tmp_path / "u.npz", ds)
    assert u.images.shape == (3, 3, 20, 20) and u.notes == ["grayscale images repeated into R, G and B"]
    from edgekd.data.preprocess import preprocess

    assert torch.equal(u.images, preprocess(np.repeat(gray[..., None], 3, axis=3), ds.preprocessing))
    _write_pngs(tmp_path / "unl", gray)
    assert _load(tmp_path / "unl", ds).notes == ["grayscale images repeated into R, G and B"]


def test_grey_stored_as_rgb_joins_gray_data(tmp_path):
    gray = _pixels(4)
    ds = _labelled(tmp_path, gray)
    as_rgb = np.repeat(gray[..., None], 3, axis=3)
    _write_pngs(tmp_path / "unl", as_rgb)
    u = _load(tmp_path / "unl", ds)
    assert u.images.shape == (4, 1, 20, 20) and "channel mean" in u.notes[0]
    order = [0, 3, 1, 2]  # patient0/000, patient0/003, patient1/001, patient2/002
    assert torch.equal(u.images, ds.train.images[order])


def test_colour_into_gray_data_is_refused(tmp_path):
    ds = _labelled(tmp_path, _pixels(4))
    np.savez(tmp_path / "u.npz", images=_pixels(3, rgb=True))
    _bad(tmp_path / "u.npz", ds, r"u.npz: 'images' image 0 is a colour image but the labelled data is grayscale")
    _write_pngs(tmp_path / "unl", _pixels(2, rgb=True), nested=False)
    _bad(tmp_path / "unl", ds, r"unlabelled image 000.png is a colour image")


# ---------------------------------------------------------------- bad inputs

def test_npz_with_labels_is_refused(tmp_path):
    ds = _labelled(tmp_path, _pixels(4))
    _bad(tmp_path / "labelled.npz", ds, r"labelled.npz has labels \(train_labels, val_labels, test_labels\): give it "
                                        r"as --data, or remove the labels to use it as unlabelled images")
    np.savez(tmp_path / "u.npz", images=_pixels(4), labels=np.zeros(4))
    _bad(tmp_path / "u.npz", ds, r"has labels \(labels\)")


def test_labelled_folder_layout_is_refused(tmp_path):
    ds = _labelled(tmp_path, _pixels(4))
    for s in ("train", "val", "test"):
        _write_pngs(tmp_path / "set" / s / "normal", _pixels(1), nested=False)
    _bad(tmp_path / "set", ds, r"has a val/ folder like a labelled image-folder dataset .*: give it as --data")
    _write_pngs(tmp_path / "heldout" / "test", _pixels(1), nested=False)
    _bad(tmp_path / "heldout", ds, r"has a test/ folder")


def test_empty_inputs(tmp_path):
    ds = _labelled(tmp_path, _pixels(4))
    (tmp_path / "empty").mkdir()
    _bad(tmp_path / "empty", ds, "--unlabelled folder .*empty has no images")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    _bad(tmp_path / "text", ds, "has no images")
    np.savez(tmp_path / "u.npz", images=np.zeros((0, 20, 20), np.uint8))
    _bad(tmp_path / "u.npz", ds, "'images' has 0 images: give at least one")
    np.savez(tmp_path / "other.npz", x=np.zeros((2, 20, 20), np.uint8))
    _bad(tmp_path / "other.npz", ds, r"other.npz has no 'images' array \(it has: x\)")


@pytest.mark.parametrize("images, match", [
    (np.full((2, 20, 20), np.nan, np.float32), "image 0 has NaN/Inf pixels"),
    (np.full((2, 20, 20), 300.0, np.float32), r"image 0 has pixels in \[300.0, 300.0\]: edgekd expects 0-255"),
    (np.full((2, 20, 20), 0.5, np.float32), "looks scaled to \\[0, 1\\] already"),
    (np.zeros((2, 20), np.uint8), "has shape \\(2, 20\\): expected N×H×W"),
    (np.zeros((2, 20, 20), np.complex64), "has dtype complex64"),
])
def test_bad_pixels(tmp_path, images, match):
    ds = _labelled(tmp_path, _pixels(4))
    np.savez(tmp_path / "u.npz", images=images)
    _bad(tmp_path / "u.npz", ds, match)


def test_missing_or_unsupported_paths(tmp_path):
    ds = _labelled(tmp_path, _pixels(4))
    _bad(tmp_path / "nope", ds, r"--unlabelled path .*nope does not exist: pass a folder of images")
    (tmp_path / "a.csv").write_text("x")
    _bad(tmp_path / "a.csv", ds, "is neither a folder nor an .npz file")
    (tmp_path / "noise.npz").write_bytes(b"\x01" * 64)
    _bad(tmp_path / "noise.npz", ds, "not an .npz archive")
    np.save(tmp_path / "single.npy", _pixels(2))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    _bad(tmp_path / "single.npz", ds, r"single array, not an .npz archive: save the images with numpy.savez\(path, images=")


def test_pickled_object_array_is_refused(tmp_path):
    ds = _labelled(tmp_path, _pixels(4))
    np.savez(tmp_path / "u.npz", images=np.array([object(), object()], dtype=object))
    _bad(tmp_path / "u.npz", ds, "holds pickled Python objects")


def test_size_must_match_without_image_size(tmp_path):
    ds = _labelled(tmp_path, _pixels(4))  # 20×20, no --image-size
    np.savez(tmp_path / "u.npz", images=_pixels(3, side=28))
    _bad(tmp_path / "u.npz", ds, r"'images' is 28×28 but the labelled images are 20×20: pass --image-size N")
    _write_pngs(tmp_path / "unl", _pixels(2, side=28), nested=False)
    _bad(tmp_path / "unl", ds, r"unlabelled image 000.png is 28×28 but the labelled images are 20×20")
    resized = _labelled(tmp_path, _pixels(4), Preprocessing(image_size=16))
    assert _load(tmp_path / "unl", resized).images.shape == (2, 1, 16, 16)


def test_limits_apply(tmp_path, monkeypatch):
    ds = _labelled(tmp_path, _pixels(4))
    np.savez(tmp_path / "u.npz", images=_pixels(6))
    _write_pngs(tmp_path / "unl", _pixels(6))
    monkeypatch.setenv("EDGEKD_MAX_IMAGES", "5")
    _bad(tmp_path / "u.npz", ds, "holds 6 images, over the limit of 5")
    _bad(tmp_path / "unl", ds, "holds 6 images, over the limit of 5")
    monkeypatch.setenv("EDGEKD_MAX_IMAGES", "100")
    monkeypatch.setenv("EDGEKD_MAX_IMAGE_SIDE", "16")
    _bad(tmp_path / "u.npz", ds, "over the 16-pixel side limit")
    _bad(tmp_path / "unl", ds, "over the 16-pixel side limit")


def test_unreadable_image_is_named(tmp_path):
    ds = _labelled(tmp_path, _pixels(4))
    _write_pngs(tmp_path / "unl", _pixels(2), nested=False)
    (tmp_path / "unl" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    _bad(tmp_path / "unl", ds, "cannot read image broken.png")
