"""Acquisition shifts (edgekd.robust.shifts): each one is deterministic for a seed, works on any
channel count and size, and changes the images the way its description says; geometric shifts
move masks with the image; robustness() scores any model under them with the metric it is given."""
from __future__ import annotations

import numpy as np
import pytest

import edgekd  # noqa: F401  (before kornia/timm: edgekd._compat)
from edgekd.errors import InputError
from edgekd.robust import (
    DEFAULT_SHIFTS,
    KINDS,
    Shift,
    robustness,
    shifted,
    shifted_masks,
)
from edgekd.robust.evaluate import robustness_of, subset

MEAN, STD = (0.5,), (0.5,)


def normalised(pix: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    c = pix.shape[1]
    m = np.resize(np.asarray(mean, np.float32), c).reshape(1, c, 1, 1)
    s = np.resize(np.asarray(std, np.float32), c).reshape(1, c, 1, 1)
    return ((pix - m) / s).astype(np.float32)


def pixels(x: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    c = x.shape[1]
    m = np.resize(np.asarray(mean, np.float32), c).reshape(1, c, 1, 1)
    s = np.resize(np.asarray(std, np.float32), c).reshape(1, c, 1, 1)
    return x * s + m


def textured(n=6, c=1, h=32, w=32, seed=0) -> np.ndarray:
    """Smooth-ish images in [0.2, 0.8] pixels with fine detail (normalised)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = 0.5 + 0.2 * np.sin(6 * xx + 3 * yy)
    pix = base[None, None] + 0.1 * rng.standard_normal((n, c, h, w))
    return normalised(np.clip(pix, 0.2, 0.8).astype(np.float32))


def square(n=4, c=1, h=40, w=40, top=14, left=14, side=8) -> tuple[np.ndarray, np.ndarray]:
    """A bright square on a dark background, and its mask (1 inside)."""
    pix = np.full((n, c, h, w), 0.1, np.float32)
    pix[:, :, top:top + side, left:left + side] = 0.9
    mask = np.zeros((n, h, w), np.int64)
    mask[:, top:top + side, left:left + side] = 1
    return normalised(pix), mask


def by(name: str, severity: int = 2) -> Shift:
    return next(s for s in DEFAULT_SHIFTS if s.name == name and s.severity == severity)


# --------------------------------------------------------------------------- the set itself


def test_the_default_set_is_eight_kinds_at_three_severities_with_exact_descriptions():
    assert {s.name for s in DEFAULT_SHIFTS} == set(KINDS) and len(KINDS) == 8
    assert len(DEFAULT_SHIFTS) == 24 and len({s.key for s in DEFAULT_SHIFTS}) == 24
    for s in DEFAULT_SHIFTS:
        text = s.describe()
        assert f"{s.value:g}" in text and s.name in text
        assert ("SeedSequence([seed" in text) == KINDS[s.name].random
        assert s.to_dict()["description"] == text


@pytest.mark.parametrize("shift", DEFAULT_SHIFTS, ids=[s.key for s in DEFAULT_SHIFTS])
def test_each_shift_is_deterministic_for_a_seed_and_the_same_in_chunks(shift):
    x = textured(n=5, c=1, h=24, w=24)
    a, b = shifted(x, shift, 7), shifted(x, shift, 7)
    assert np.array_equal(a, b) and a.dtype == np.float32 and a.shape == x.shape
    assert not np.allclose(a, x)  # it changes the images
    assert np.array_equal(np.concatenate([shifted(x[:2], shift, 7), shifted(x[2:], shift, 7, start=2)]), a)
    p = pixels(a)
    assert p.min() >= -1e-6 and p.max() <= 1 + 1e-6  # clamped in pixel space


def test_random_shifts_change_with_the_seed_and_leave_the_global_rng_alone():
    x = textured(n=4)
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    import torch

    torch_state = torch.random.get_rng_state().clone()
    for name in ("gaussian-noise", "speckle", "rotation", "translation"):
        shift = by(name)
        a, b = shifted(x, shift, 0), shifted(x, shift, 1)
        assert not np.array_equal(a, b) or name == "translation" and not np.array_equal(
            shifted(textured(n=16), shift, 0), shifted(textured(n=16), shift, 1)), name
    assert np.array_equal(np.random.get_state()[1], state)
    assert torch.equal(torch.random.get_rng_state(), torch_state)


@pytest.mark.parametrize("c,h,w", [(1, 28, 28), (3, 20, 36), (2, 17, 9)])
def test_every_shift_works_for_any_channel_count_and_size(c, h, w):
    x = textured(n=3, c=c, h=h, w=w)
    for shift in DEFAULT_SHIFTS:
        y = shifted(x, shift, 0, mean=(0.5,) * c, std=(0.5,) * c)
        assert y.shape == x.shape and np.isfinite(y).all(), shift.key


def test_bad_shifts_fail_with_one_line():
    with pytest.raises(InputError, match="did you mean 'speckle'") as e:
        Shift("speckel", 1, 0.1)
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match=r"quality must be in \(0, 100\]"):
        Shift("jpeg", 1, 150)
    with pytest.raises(InputError, match="severity"):
        Shift("gamma", 0, 1.2)
    with pytest.raises(InputError, match="N×C×H×W"):
        shifted(np.zeros((4, 4), np.float32), by("gamma"), 0)


# --------------------------------------------------------------------------- what each shift does


def test_gaussian_noise_raises_the_variance_by_sigma_squared():
    pix = np.full((8, 1, 32, 32), 0.5, np.float32)
    for sev in (1, 2, 3):
        s = by("gaussian-noise", sev)
        out = pixels(shifted(normalised(pix), s, 0))
        assert out.var() == pytest.approx(s.value ** 2, rel=0.1)
        assert abs(out.mean() - 0.5) < 0.01


def test_speckle_is_multiplicative_black_stays_black_and_brighter_gets_noisier():
    pix = np.zeros((4, 1, 32, 32), np.float32)
    pix[:, :, :, 16:] = 0.6
    s = by("speckle", 2)
    out = pixels(shifted(normalised(pix), s, 0))
    assert np.allclose(out[..., :16], 0.0, atol=1e-6)
    assert out[..., 16:].std() == pytest.approx(0.6 * s.value, rel=0.1)


def test_blur_lowers_high_frequency_energy_more_at_higher_severity():
    x = textured(n=4, h=48, w=48)

    def hf(a):  # energy of the discrete Laplacian
        p = pixels(a)[:, 0]
        lap = 4 * p[:, 1:-1, 1:-1] - p[:, :-2, 1:-1] - p[:, 2:, 1:-1] - p[:, 1:-1, :-2] - p[:, 1:-1, 2:]
        return float((lap ** 2).mean())

    e = [hf(x)] + [hf(shifted(x, by("gaussian-blur", sev), 0)) for sev in (1, 2, 3)]
    assert e[0] > e[1] > e[2] > e[3] and e[3] < 0.3 * e[0]
    assert abs(pixels(shifted(x, by("gaussian-blur", 3), 0)).mean() - pixels(x).mean()) < 0.01


def test_contrast_scales_the_spread_about_the_image_mean():
    x = textured(n=4)
    for sev in (1, 2, 3):
        s = by("contrast", sev)
        before, after = pixels(x), pixels(shifted(x, s, 0))
        assert after.std(axis=(2, 3)) == pytest.approx(s.value * before.std(axis=(2, 3)), rel=1e-4)
        assert after.mean(axis=(2, 3)) == pytest.approx(before.mean(axis=(2, 3)), abs=1e-5)


def test_gamma_darkens_the_mid_tones_and_keeps_black_and_white():
    pix = np.array([0.0, 0.25, 0.5, 0.75, 1.0], np.float32).reshape(1, 1, 1, 5)
    for sev in (1, 2, 3):
        s = by("gamma", sev)
        out = pixels(shifted(normalised(pix), s, 0))[0, 0, 0]
        assert out[0] == pytest.approx(0.0, abs=1e-6) and out[-1] == pytest.approx(1.0, abs=1e-6)
        assert out[2] == pytest.approx(0.5 ** s.value, abs=1e-5) and out[2] < 0.5
    assert pixels(shifted(normalised(pix), by("gamma", 3), 0))[0, 0, 0, 2] < \
        pixels(shifted(normalised(pix), by("gamma", 1), 0))[0, 0, 0, 2]


@pytest.mark.parametrize("c", [1, 3, 2])
def test_jpeg_changes_the_pixels_keeps_the_mean_and_loses_more_at_lower_quality(c):
    x = textured(n=3, c=c, h=32, w=32)
    errors = []
    for sev in (1, 2, 3):
        out = pixels(shifted(x, by("jpeg", sev), 0, mean=(0.5,) * c, std=(0.5,) * c))
        assert not np.allclose(out, pixels(x), atol=1 / 255)
        assert abs(out.mean() - pixels(x).mean()) < 0.02
        assert np.allclose(out * 255, np.rint(out * 255), atol=1e-3)  # decoded 8-bit values
        errors.append(float(np.abs(out - pixels(x)).mean()))
    assert errors[0] < errors[1] < errors[2]


def test_translation_moves_a_known_square_by_whole_pixels_and_the_mask_with_it():
    x, mask = square(n=8, h=40, w=40, top=14, left=14, side=8)
    s = by("translation", 1)  # 0.05 × 40 = 2 px each axis
    out, moved = pixels(shifted(x, s, 3))[:, 0], shifted_masks(mask, s, 3)
    for img, m in zip(out, moved):
        ys, xs = np.nonzero(img > 0.5)
        dy, dx = ys.min() - 14, xs.min() - 14
        assert abs(dy) == 2 and abs(dx) == 2 and len(ys) == 64
        assert np.array_equal(img > 0.5, m == 1)
    assert len({(int(np.nonzero(m)[0].min()), int(np.nonzero(m)[1].min())) for m in moved}) > 1  # signs vary
    assert moved.dtype == mask.dtype and set(np.unique(moved)) <= {0, 1}


def test_rotation_turns_a_known_square_about_the_centre_and_the_mask_with_it():
    x, mask = square(n=6, h=41, w=41, top=6, left=16, side=9)  # above the centre
    s = by("rotation", 3)  # ±15°
    out, moved = pixels(shifted(x, s, 0))[:, 0], shifted_masks(mask, s, 0)
    c = 20.0
    for img, m in zip(out, moved):
        ys, xs = np.nonzero(img > 0.5)
        angle = np.degrees(np.arctan2(xs.mean() - c, c - ys.mean()))  # 0 before: straight up
        assert abs(abs(angle) - 15) < 2
        my, mx = np.nonzero(m)
        assert abs(my.mean() - ys.mean()) < 0.6 and abs(mx.mean() - xs.mean()) < 0.6
        assert np.mean((img > 0.5) == (m == 1)) > 0.99
    assert set(np.unique(moved)) <= {0, 1}


def test_photometric_shifts_leave_masks_alone():
    _, mask = square()
    for name in ("gaussian-noise", "speckle", "gaussian-blur", "contrast", "gamma", "jpeg"):
        assert shifted_masks(mask, by(name), 0) is mask


def test_mean_and_std_are_undone_and_redone():
    pix = np.full((2, 3, 8, 8), 0.5, np.float32)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = shifted(normalised(pix, mean, std), by("gamma", 2), 0, mean=mean, std=std)
    assert pixels(out, mean, std) == pytest.approx(np.full_like(pix, 0.5 ** 1.6), abs=1e-5)


# --------------------------------------------------------------------------- robustness()


def brightness_model(x: np.ndarray) -> np.ndarray:
    """Logits [0, mean of the central 2×2 pixels − 0.5]: class 1 means 'bright'."""
    h, w = x.shape[-2:]
    p = pixels(x)[:, :, h // 2 - 1:h // 2 + 1, w // 2 - 1:w // 2 + 1].mean(axis=(1, 2, 3))
    return np.stack([np.zeros_like(p), p - 0.5], axis=1)


def test_robustness_scores_clean_and_every_shift_with_the_metric_given():
    from edgekd.metrics.classification import roc_auc

    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(20, int), np.ones(20, int)]
    level = np.where(labels == 1, 0.55, 0.45) + 0.02 * rng.standard_normal(40)
    pix = np.clip(level[:, None, None, None] + 0.05 * rng.standard_normal((40, 1, 16, 16)), 0, 1).astype(np.float32)
    r = robustness(brightness_model, normalised(pix), labels, roc_auc, DEFAULT_SHIFTS, seed=0, metric="auc",
                   batch_size=16)
    assert r.clean == pytest.approx(roc_auc(brightness_model(normalised(pix)), labels))
    assert len(r.scores) == 24 and r.images == 40 and r.metric == "auc"
    for s in r.scores:
        assert s.drop == pytest.approx(r.clean - s.metric)
    assert r.mean_drop == pytest.approx(np.mean([s.drop for s in r.scores]))
    assert r.score("gaussian-noise", 3).metric < r.clean  # strong noise on faint differences hurts
    d = r.to_dict()
    assert d["mean_drop"] == r.mean_drop and len(d["scores"]) == 24 and d["worst"] == r.worst().shift.key


def test_masks_move_with_geometric_shifts_so_a_perfect_segmenter_stays_perfect():
    x, mask = square(n=6, h=40, w=40)

    def segment(batch):  # per-pixel "logits": bright is foreground
        return (pixels(batch)[:, 0] > 0.5).astype(np.int64)

    def pixel_accuracy(pred, truth):
        return float((pred == truth).mean())

    shifts = (by("translation", 3), by("rotation", 2), by("gaussian-blur", 1))
    r = robustness(segment, x, None, pixel_accuracy, shifts, seed=0, masks=mask)
    assert r.clean == 1.0
    assert r.score("translation", 3).metric == 1.0 and r.score("rotation", 2).metric > 0.99
    unmoved = robustness(segment, x, mask, pixel_accuracy, shifts[:1], seed=0)  # masks passed as plain labels
    assert unmoved.scores[0].metric < 0.99  # had the mask not moved, the score would have fallen


def test_runners_and_several_models_share_one_set_of_shifted_images():
    from edgekd.metrics.classification import roc_auc

    class Runner:  # edgekd.lower._base.Runner's shape
        backend, precision, path = "torch", "fp32", None

        def __init__(self):
            self.seen = []

        def __call__(self, x):
            self.seen.append(x.copy())
            return brightness_model(x)

    a, b = Runner(), Runner()
    x = textured(n=10)
    labels = np.r_[np.zeros(5, int), np.ones(5, int)]
    res = robustness_of({"a": a, "b": b}, x, labels, roc_auc, (by("speckle"),), seed=2, batch_size=4)
    assert set(res) == {"a", "b"} and res["a"].clean == res["b"].clean
    assert all(np.array_equal(p, q) for p, q in zip(a.seen, b.seen)) and len(a.seen) == 6  # 3 chunks × (clean, shift)
    with pytest.raises(InputError, match="labels"):
        robustness(brightness_model, x, None, roc_auc)


def test_subset_is_all_or_a_seeded_sorted_sample():
    assert np.array_equal(subset(10, 512, 0), np.arange(10))
    s = subset(1000, 100, 0)
    assert len(s) == 100 and np.array_equal(s, np.sort(s)) and np.array_equal(s, subset(1000, 100, 0))
    assert not np.array_equal(s, subset(1000, 100, 1))
