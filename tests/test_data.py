"""The data layer: preprocessing, the MedMNIST .npz reader, image folders, the synthetic demo set
(malformed data: tests/test_data_errors.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgekd._io import sha256_file, sha256_tree
from edgekd.config import Preprocessing
from edgekd.data import Dataset, Split, load_dataset, make_synthetic_xrays
from edgekd.data import preprocess as pp
from edgekd.data.folder import load_folder
from edgekd.data.npz import load_npz
from edgekd.data.synthetic import load_synthetic
from edgekd.errors import DataError

SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------- helpers
def _arrays(n=(12, 6, 6), size=8, rgb=False, labels_2d=True, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for split, k in zip(SPLITS, n):
        shape = (k, size, size, 3) if rgb else (k, size, size)
        out[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        labels = (np.arange(k) % 2).astype(np.uint8)
        out[f"{split}_labels"] = labels[:, None] if labels_2d else labels
    return out


def _write_npz(tmp_path: Path, arrays: dict, name="d.npz") -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _folder(tmp_path: Path, classes=("normal", "pneumonia"), per_class=3, size=8, rgb_first=False) -> Path:
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for split in SPLITS:
        for c in classes:
            for i in range(per_class):
                rgb = rgb_first and split == "train" and c == classes[0] and i == 0
                shape = (size, size, 3) if rgb else (size, size)
                _png(root / split / c / f"{i:03d}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    return root


# ---------------------------------------------------------------- preprocess
def test_preprocess_scales_and_normalises_grayscale():
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)  # 1×2×2
    x = pp.preprocess(images, Preprocessing(mean=(0.5,), std=(0.5,)))
    assert x.dtype == torch.float32 and x.shape == (1, 1, 2, 2)
    expected = (torch.tensor([[0, 255], [51, 102]], dtype=torch.float32) / 255 - 0.5) / 0.5
    torch.testing.assert_close(x[0, 0], expected)
    assert x[0, 0, 0, 1].item() == pytest.approx(1.0) and x[0, 0, 0, 0].item() == pytest.approx(-1.0)


def test_preprocess_rgb_per_channel_and_channel_last_input():
    images = np.full((2, 4, 4, 3), 255, dtype=np.uint8)
    images[..., 1] = 0
    x = pp.preprocess(images, Preprocessing(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0)))
    assert x.shape == (2, 3, 4, 4)
    assert torch.allclose(x[:, 0], torch.tensor(1.0)) and torch.allclose(x[:, 1], torch.tensor(-1.0))
    assert torch.allclose(x[:, 2], torch.tensor(0.5))


def test_preprocess_accepts_float_and_single_channel_last_axis():
    rng = np.random.default_rng(1)
    u8 = rng.integers(0, 256, (3, 5, 5), dtype=np.uint8)
    ref = pp.preprocess(u8, Preprocessing())
    torch.testing.assert_close(pp.preprocess(u8.astype(np.float64), Preprocessing()), ref)
    torch.testing.assert_close(pp.preprocess(u8[..., None], Preprocessing()), ref)
    f32 = u8.astype(np.float32)  # scaled in place inside: on a copy, never on the caller's pixels
    torch.testing.assert_close(pp.preprocess(f32, Preprocessing()), ref)
    assert np.array_equal(f32, u8.astype(np.float32))


def test_preprocess_resize_is_antialiased_bilinear():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    x = pp.preprocess(images, Preprocessing(image_size=12, mean=(0.0,), std=(1.0,)))
    ref = F.interpolate(torch.from_numpy(images).float()[:, None] / 255, size=(12, 12), mode="bilinear", antialias=True)
    assert x.shape == (4, 1, 12, 12)
    torch.testing.assert_close(x, ref)
    flat = pp.preprocess(np.full((1, 28, 28), 255, np.uint8), Preprocessing(image_size=64))
    assert flat.shape == (1, 1, 64, 64) and torch.allclose(flat, torch.tensor(1.0))


def test_preprocess_chunks_give_the_same_result(monkeypatch):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    pre = Preprocessing(image_size=20, mean=(0.4,), std=(0.3,))
    whole = pp.preprocess(images, pre)
    monkeypatch.setattr(pp, "_CHUNK_PIXELS", 3 * 20 * 20 * 3)  # 3 images per chunk
    torch.testing.assert_close(pp.preprocess(images, pre), whole)


def test_resolve_fills_channels_and_expands_without_mutating():
    pre = Preprocessing(mean=(0.5,), std=(0.25,))
    r = pp.resolve(pre, 3)
    assert r.channels == 3 and r.mean == (0.5, 0.5, 0.5) and r.std == (0.25, 0.25, 0.25)
    assert pre.channels is None and pre.mean == (0.5,)


@pytest.mark.parametrize(
    "pre, images, words",
    [
        (Preprocessing(mean=(0.1, 0.2)), np.zeros((1, 4, 4, 3), np.uint8), ["mean", "2 values", "3 channel"]),
        (Preprocessing(mean=(0.1, 0.2, 0.3)), np.zeros((1, 4, 4), np.uint8), ["mean", "3 values", "1 channel"]),
        (Preprocessing(std=(0.5, 0.5)), np.zeros((1, 4, 4, 3), np.uint8), ["std", "2 values"]),
        (Preprocessing(std=(0.0,)), np.zeros((1, 4, 4), np.uint8), ["std", "> 0"]),
        (Preprocessing(image_size=4), np.zeros((1, 4, 4), np.uint8), ["image size 4", "--image-size"]),
        (Preprocessing(image_size=2048), np.zeros((1, 4, 4), np.uint8), ["2048", "--image-size"]),
        (Preprocessing(), np.zeros((1, 1100, 20), np.uint8), ["1100", "1024", "--image-size"]),
        (Preprocessing(), np.zeros((2, 4), np.uint8), ["shape (2, 4)", "N×H×W"]),
        (Preprocessing(), np.zeros((1, 4, 4, 2), np.uint8), ["shape (1, 4, 4, 2)"]),
        (Preprocessing(), np.full((1, 4, 4), 300.0), ["300", "0-255"]),
        (Preprocessing(), np.full((1, 4, 4), np.nan), ["NaN"]),
        (Preprocessing(channels=3), np.zeros((1, 4, 4), np.uint8), ["3 channel", "has 1"]),
    ],
)
def test_preprocess_rejects_bad_input(pre, images, words):
    with pytest.raises(DataError) as e:
        pp.preprocess(images, pre)
    assert all(w in str(e.value) for w in words), str(e.value)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- npz
@pytest.mark.parametrize("rgb, labels_2d", [(False, True), (True, False)])
def test_npz_round_trip(tmp_path, rgb, labels_2d):
    arrays = _arrays(rgb=rgb, labels_2d=labels_2d)
    path = _write_npz(tmp_path, arrays)
    ds = load_npz(path, Preprocessing())
    c = 3 if rgb else 1
    assert isinstance(ds, Dataset) and ds.format == "npz" and ds.path == path
    assert ds.split_sizes() == {"train": 12, "val": 6, "test": 6}
    assert ds.channels == c and ds.image_size == (8, 8) and ds.num_classes == 2
    assert ds.class_names == ["class_0", "class_1"]
    assert ds.preprocessing.channels == c and len(ds.preprocessing.mean) == c
    assert ds.sha256 == sha256_file(path)
    for s in SPLITS:
        split = getattr(ds, s)
        assert split.images.shape == (len(split), c, 8, 8) and split.images.dtype == torch.float32
        assert split.labels.dtype == torch.int64
        assert split.labels.tolist() == arrays[f"{s}_labels"].reshape(-1).tolist()
    raw = torch.from_numpy(arrays["train_images"][0]).float()
    raw = raw[None] if not rgb else raw.permute(2, 0, 1)
    torch.testing.assert_close(ds.train.images[0], (raw / 255 - 0.5) / 0.5)


def test_npz_resize_class_names_and_num_classes(tmp_path):
    arrays = _arrays()
    for s in SPLITS:
        arrays[f"{s}_labels"][:, 0] = np.arange(len(arrays[f"{s}_labels"])) % 3
    arrays["class_names"] = np.array(["normal", "bacterial", "viral"])
    ds = load_npz(_write_npz(tmp_path, arrays), Preprocessing(image_size=16))
    assert ds.num_classes == 3 and ds.class_names == ["normal", "bacterial", "viral"]
    assert ds.image_size == (16, 16) and ds.train.images.shape == (12, 1, 16, 16)


def test_npz_max_samples_picks_the_rows_split_subset_picks(tmp_path):
    path = _write_npz(tmp_path, _arrays(n=(30, 10, 4)))
    full = load_npz(path, Preprocessing())
    capped = load_npz(path, Preprocessing(), max_samples=5, seed=7)
    assert capped.split_sizes() == {"train": 5, "val": 5, "test": 4}
    for s in SPLITS:
        ref = getattr(full, s).subset(5, seed=7)
        torch.testing.assert_close(getattr(capped, s).images, ref.images)
        assert torch.equal(getattr(capped, s).labels, ref.labels)
    assert capped.extra["source_sizes"]["train"] == 30


# ---------------------------------------------------------------- folders
def test_folder_grayscale(tmp_path):
    root = _folder(tmp_path)
    (root / "train" / "normal" / "notes.txt").write_text("ignored")
    ds = load_folder(root, Preprocessing())
    assert ds.format == "folder" and ds.class_names == ["normal", "pneumonia"] and ds.num_classes == 2
    assert ds.channels == 1 and ds.image_size == (8, 8)
    assert ds.split_sizes() == {"train": 6, "val": 6, "test": 6}
    assert ds.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.sha256 == sha256_tree(root)
    from PIL import Image

    first = np.asarray(Image.open(root / "train" / "normal" / "000.png"), dtype=np.float32)
    torch.testing.assert_close(ds.train.images[0, 0], torch.from_numpy((first / 255 - 0.5) / 0.5))


def test_folder_one_rgb_image_makes_everything_rgb(tmp_path):
    root = _folder(tmp_path, rgb_first=True)
    ds = load_folder(root, Preprocessing(), max_samples=4, seed=3)
    assert ds.channels == 3 and ds.train.images.shape == (4, 3, 8, 8)
    gray = ds.val.images[0]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])  # gray repeated into R, G, B


def test_folder_16bit_is_scaled_to_8bit_range(tmp_path):
    root = _folder(tmp_path)
    px = np.full((8, 8), 65535, np.uint16)
    px[0, 0] = 0
    _png(root / "train" / "normal" / "000.png", px)
    ds = load_folder(root, Preprocessing())
    assert ds.channels == 1 and "I;16" in ds.extra["image_modes"]
    assert ds.train.images[0, 0, 0, 0].item() == pytest.approx(-1.0)
    assert ds.train.images[0, 0, 1, 1].item() == pytest.approx(1.0)


def test_folder_mixed_sizes_need_image_size(tmp_path):
    root = _folder(tmp_path)
    _png(root / "val" / "pneumonia" / "big.png", np.zeros((12, 10), np.uint8))
    with pytest.raises(DataError, match="--image-size"):
        load_folder(root, Preprocessing())
    ds = load_folder(root, Preprocessing(image_size=16))
    assert ds.image_size == (16, 16) and ds.val.images.shape == (7, 1, 16, 16)


# ---------------------------------------------------------------- synthetic
def test_synthetic_is_deterministic_and_seeded():
    a, la = make_synthetic_xrays(40, size=32, seed=5)
    b, lb = make_synthetic_xrays(40, size=32, seed=5)
    c, _ = make_synthetic_xrays(40, size=32, seed=6)
    assert a.dtype == np.uint8 and a.shape == (40, 32, 32) and la.dtype == np.int64 and la.shape == (40,)
    assert a.tobytes() == b.tobytes() and np.array_equal(la, lb)
    assert a.tobytes() != c.tobytes()
    assert a.std() > 20  # real structure, not a flat image


def test_synthetic_classes_are_balanced():
    _, labels = make_synthetic_xrays(301, size=16, seed=0)
    assert set(labels.tolist()) == {0, 1} and abs(int(labels.sum()) - 150) <= 1


def test_load_synthetic_dataset_fields():
    def make(seed):
        return load_synthetic(Preprocessing(image_size=32), n_train=40, n_val=20, n_test=20, size=48, seed=seed,
                              max_samples=30)

    ds = make(1)
    assert ds.format == "synthetic" and ds.path is None and ds.class_names == ["normal", "pneumonia"]
    assert ds.split_sizes() == {"train": 30, "val": 20, "test": 20}
    assert ds.image_size == (32, 32) and ds.channels == 1 and ds.train.images.shape == (30, 1, 32, 32)
    assert ds.extra["synthetic"] is True and "not real patients" in ds.extra["note"]
    assert ds.sha256 == make(1).sha256 != make(2).sha256
    assert not torch.equal(ds.train.images[:20], ds.val.images)  # splits use different derived seeds


def test_synthetic_is_learnable_but_not_trivial():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    def features(x):  # 64×64 -> 16×16 mean-pooled pixels
        return x.reshape(len(x), 16, 4, 16, 4).mean(axis=(2, 4)).reshape(len(x), -1) / 255

    xtr, ytr = make_synthetic_xrays(1000, size=64, seed=11)
    xte, yte = make_synthetic_xrays(400, size=64, seed=12)
    clf = LogisticRegression(max_iter=1000).fit(features(xtr), ytr)
    auc = roc_auc_score(yte, clf.predict_proba(features(xte))[:, 1])
    assert 0.7 < auc < 0.999, auc


# ---------------------------------------------------------------- load_dataset
def test_load_dataset_dispatches_on_the_path(tmp_path):
    npz = load_dataset(_write_npz(tmp_path, _arrays()), Preprocessing())
    folder = load_dataset(_folder(tmp_path), Preprocessing())
    synthetic = load_dataset(None, Preprocessing(), max_samples=10)
    assert (npz.format, folder.format, synthetic.format) == ("npz", "folder", "synthetic")
    assert synthetic.split_sizes() == {"train": 10, "val": 10, "test": 10}
    assert isinstance(npz.train, Split)


def test_load_dataset_rejects_missing_and_unknown_paths(tmp_path):
    with pytest.raises(DataError, match=r"data path .*nothing.npz does not exist"):
        load_dataset(tmp_path / "nothing.npz", Preprocessing())
    other = tmp_path / "data.txt"
    other.write_text("a,b\n")
    with pytest.raises(DataError, match=r"data.txt is not a supported dataset: pass a \.npz file"):
        load_dataset(other, Preprocessing())
    other = other.rename(tmp_path / "data.csv")  # a .csv is a manifest (tests/test_manifest.py)
    with pytest.raises(DataError, match=r"manifest data.csv has no file or label column"):
        load_dataset(other, Preprocessing())
    with pytest.raises(DataError, match="max_samples"):
        load_dataset(None, Preprocessing(), max_samples=0)


# ---------------------------------------------------------------- the real PneumoniaMNIST copy
def test_real_pneumoniamnist(pneumonia_npz):
    ds = load_dataset(pneumonia_npz, Preprocessing(), max_samples=64)
    assert ds.num_classes == 2 and ds.channels == 1 and ds.image_size == (28, 28)
    assert ds.split_sizes() == {"train": 64, "val": 64, "test": 64}
    assert ds.extra["source_sizes"] == {"train": 3882, "val": 524, "test": 624}
    assert -1.0 <= ds.test.images.min() < ds.test.images.max() <= 1.0
    big = load_dataset(pneumonia_npz, Preprocessing(image_size=64), max_samples=16)
    assert big.image_size == (64, 64) and big.train.images.shape == (16, 1, 64, 64)
    assert big.sha256 == ds.sha256 == sha256_file(pneumonia_npz)
