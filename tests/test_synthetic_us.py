"""The SYNTHETIC ultrasound segmentation set (edgekd.data.synthetic_us)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from edgekd.config import Preprocessing
from edgekd.data.synthetic_us import (
    load_synthetic_ultrasound,
    make_synthetic_ultrasound,
    synthetic_ultrasound_splits,
)
from edgekd.errors import DataError
from edgekd.metrics.segmentation import evaluate_segmentation


@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, np.ndarray]:
    return make_synthetic_ultrasound(96, seed=11)


def test_deterministic_for_a_seed_and_different_for_another():
    a, b, c = (make_synthetic_ultrasound(70, size=64, seed=s) for s in (3, 3, 4))  # 70: two chunks
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


def test_shapes_dtypes_and_binary_masks(batch):
    images, masks = batch
    assert images.shape == masks.shape == (96, 128, 128)
    assert images.dtype == masks.dtype == np.uint8
    assert set(np.unique(masks).tolist()) == {0, 1}
    assert images.std() > 20  # not blank


def test_some_images_have_no_lesion_and_the_fraction_is_honoured(batch):
    has = batch[1].reshape(96, -1).any(axis=1)
    assert 0.1 < 1 - has.mean() < 0.45  # lesion_fraction 0.75 by default
    assert not make_synthetic_ultrasound(8, size=32, seed=0, lesion_fraction=0.0)[1].any()
    assert make_synthetic_ultrasound(8, size=32, seed=0, lesion_fraction=1.0)[1].reshape(8, -1).any(axis=1).all()


def test_lesions_are_darker_than_their_rim(batch):
    images, masks = batch
    gaps = []
    for img, m in zip(images, masks.astype(bool)):
        if m.any():
            ring = ndimage.binary_dilation(m, iterations=3) & ~m  # the 3 pixels just outside the lesion
            gaps.append(img[ring].mean() - img[m].mean())
    gaps = np.array(gaps)
    assert gaps.mean() > 25 and (gaps > 0).mean() > 0.9


def test_lesions_vary_in_size_and_contrast(batch):
    images, masks = batch
    has = masks.reshape(96, -1).any(axis=1)
    area = masks.reshape(96, -1).sum(axis=1)[has]
    assert area.max() > 4 * area.min()
    inner = np.array([img[m == 1].mean() for img, m in zip(images[has], masks[has])])
    assert inner.std() > 5


def test_a_dark_pixel_threshold_does_badly(batch):
    """Shadows, vessels and the black outside of the fan are dark too: the task is not a threshold."""
    images, masks = batch
    smooth = ndimage.gaussian_filter(images.astype(np.float32), (0, 2, 2))
    view = ndimage.gaussian_filter(images.astype(np.float32), (0, 6, 6)) > 12
    best = max(evaluate_segmentation(((smooth < t) & view).astype(np.int64), masks, 2, hd=False, resamples=0).mean_dice
               for t in (10, 20, 30, 45, 60))
    assert best < 0.3


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(n=2.5), dict(n=4, size=4), dict(n=4, lesion_fraction=1.5)])
def test_bad_arguments_are_data_errors(kwargs):
    with pytest.raises(DataError):
        make_synthetic_ultrasound(**kwargs)


def test_splits_come_from_different_seeds():
    splits = synthetic_ultrasound_splits(5, 5, 5, size=32, seed=0)
    assert list(splits) == ["train", "val", "test"]
    assert not np.array_equal(splits["train"][0], splits["val"][0])


def test_load_synthetic_ultrasound_is_a_seg_dataset():
    ds = load_synthetic_ultrasound(Preprocessing(image_size=48), n_train=10, n_val=6, n_test=6, size=64, seed=2)
    assert ds.format == "synthetic" and ds.task == "segmentation" and ds.num_classes == 2 and ds.channels == 1
    assert ds.class_names == ["background", "lesion"] and ds.image_size == (48, 48)
    assert ds.train.images.shape == (10, 1, 48, 48) and ds.train.images.dtype == torch.float32
    assert ds.train.masks.shape == (10, 48, 48) and ds.train.masks.dtype == torch.int64
    assert set(ds.train.masks.unique().tolist()) <= {0, 1}
    assert ds.extra["synthetic"] is True and ds.split_sizes() == {"train": 10, "val": 6, "test": 6}
    again = load_synthetic_ultrasound(Preprocessing(image_size=48), n_train=10, n_val=6, n_test=6, size=64, seed=2)
    assert again.sha256 == ds.sha256 and torch.equal(again.test.masks, ds.test.masks)
    capped = load_synthetic_ultrasound(Preprocessing(), n_train=10, n_val=6, n_test=6, size=32, max_samples=3)
    assert capped.split_sizes() == {"train": 3, "val": 3, "test": 3} and capped.sha256 != ds.sha256
