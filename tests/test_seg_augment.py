"""Joint image/mask augmentation: one geometric transform for both, nearest for the mask, seeded."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from edgekd.distill.seg_augment import SegAugmenter
from edgekd.errors import InputError


def checkerboard(n: int = 4, size: int = 64, cell: int = 8) -> torch.Tensor:
    """N×H×W int64 masks of 0/1 squares: many edges, so any misalignment shows."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (((yy // cell) + (xx // cell)) % 2).expand(n, size, size).clone()


def medical(**kw) -> SegAugmenter:
    return SegAugmenter("medical", mean=(0.0,), std=(1.0,), channels=1, **kw)


def _edges(masks: torch.Tensor) -> torch.Tensor:
    """Pixels within one pixel of a class boundary (3×3 dilation differs from erosion)."""
    m = masks[:, None].float()
    return (F.max_pool2d(m, 3, 1, 1) != -F.max_pool2d(-m, 3, 1, 1))[:, 0]


@pytest.mark.parametrize("flips", [False, True])
def test_the_mask_follows_the_image(flips):
    masks = checkerboard()
    images = masks[:, None].float()  # an image whose pixels equal its mask
    aug = medical(flips=flips)
    x, y = aug(images, masks, seed=5)
    assert not torch.equal(y, masks)  # it did move
    agree = (x[:, 0] > 0.5) == (y == 1)
    assert agree.float().mean() > 0.97
    assert bool(agree[~_edges(y)].all())  # bilinear vs nearest differ only on boundaries
    _, other = aug(images, masks, seed=6)  # a mask warped with other parameters does not line up
    assert ((x[:, 0] > 0.5) == (other == 1)).float().mean() < 0.9


def test_views_are_fixed_by_the_seed_and_leave_the_global_stream_alone():
    masks = checkerboard()
    images = torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    aug = medical()
    before = torch.random.get_rng_state()
    x1, y1 = aug(images, masks, seed=1)
    x2, y2 = aug(images, masks, seed=1)
    x3, y3 = aug(images, masks, seed=2)
    assert torch.equal(before, torch.random.get_rng_state())
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3) and not torch.equal(y1, y3)


def test_masks_keep_their_class_indices_and_photometric_ops_touch_the_image_only():
    masks = torch.full((6, 32, 32), 2)
    masks[:, :8] = -1  # unlabelled rows
    masks[:, 12:20, 12:20] = 1
    images = torch.full((6, 1, 32, 32), 0.5)
    x, y = medical()(images, masks, seed=3)
    assert y.dtype == torch.int64 and set(y.unique().tolist()) <= {-1, 1, 2}
    assert (y == 2).any() and (y == 1).any()
    const = torch.full((6, 32, 32), 2)
    _, y_const = medical()(images, const, seed=3)
    assert torch.equal(y_const, const)  # border replicated: a constant mask stays constant
    assert not torch.allclose(x, images)  # the flat image got brightness / contrast / noise


def test_none_is_the_identity_and_bad_inputs_fail_in_one_line():
    masks = checkerboard(2, 32)
    images = masks[:, None].float()
    x, y = SegAugmenter("none", mean=(0.5,), std=(0.5,), channels=1)(images, masks, seed=0)
    assert x is images and y is masks
    with pytest.raises(InputError, match="N×H×W"):
        medical()(images, masks[:, :16], seed=0)
    with pytest.raises(InputError, match="integer"):
        medical()(images, masks.float(), seed=0)
    with pytest.raises(InputError, match="did you mean 'medical'"):
        SegAugmenter("medica", mean=(0.5,), std=(0.5,), channels=1)
    assert "nearest" in medical().describe()["masks"]
