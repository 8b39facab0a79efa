"""Segmentation metrics (edgekd.metrics.segmentation) against hand-computed small cases."""
from __future__ import annotations

import numpy as np
import pytest

from edgekd.errors import InputError
from edgekd.metrics import segmentation as sm


def _squares() -> tuple[np.ndarray, np.ndarray]:
    """Two 5×5 squares in a 7×7 image, the prediction one pixel right of the truth."""
    truth = np.zeros((7, 7), np.int64)
    pred = np.zeros((7, 7), np.int64)
    truth[0:5, 0:5] = 1
    pred[0:5, 1:6] = 1
    return pred, truth


def test_dice_and_iou_of_two_squares_offset_by_one_pixel():
    # |P| = |T| = 25, |P∩T| = 5 rows × 4 columns = 20, |P∪T| = 30:
    #   Dice = 2·20 / 50 = 0.8, IoU = 20 / 30 = 2/3.
    # Background: 49 − 25 = 24 pixels in each, overlap 49 − 30 = 19: Dice = 38/48, IoU = 19/29.
    pred, truth = _squares()
    dice, iou = sm.dice_scores(pred, truth, 2), sm.iou_scores(pred, truth, 2)
    assert dice.shape == (1, 2)
    assert dice[0, 1] == pytest.approx(0.8) and iou[0, 1] == pytest.approx(2 / 3)
    assert dice[0, 0] == pytest.approx(38 / 48) and iou[0, 0] == pytest.approx(19 / 29)
    tp, fp, fn = sm.overlap_counts(pred, truth, 2)
    assert (tp[0, 1], fp[0, 1], fn[0, 1]) == (20, 5, 5)


def test_hd95_of_two_squares_offset_by_one_pixel_is_one():
    # Boundaries are the 16-pixel rings. From the truth's ring to the prediction's: the top and
    # bottom rows share columns 1-4 (distance 0) and column 0 is 1 away; the left column (rows
    # 1-3) is 1 from the prediction's left column; the right column (col 4) is 1 from col 5.
    # So 6 zeros and 10 ones each way: the 95th percentile (linear) is 1, in both directions.
    pred, truth = _squares()
    assert sm.hd95(pred == 1, truth == 1) == pytest.approx(1.0)
    assert sm.hd95_scores(pred, truth, 2)[0, 1] == pytest.approx(1.0)
    assert np.isnan(sm.hd95_scores(pred, truth, 2)[0, 0])  # background not computed by default


def test_hd95_is_the_larger_directed_percentile_not_the_pooled_one():
    # Truth: a 5×5 square; prediction: the same square plus one isolated pixel 10 pixels below.
    # ∂P→∂T: the 16 ring pixels at 0 and the outlier at 10: P95 = 0 + 0.2·(10 − 0) = 2.0
    # (17 values, position 0.95·16 = 15.2). ∂T→∂P: 16 zeros, P95 = 0. HD95 = max = 2.0.
    # (Pooling the 33 distances would give 0; the full Hausdorff distance is 10.)
    truth = np.zeros((20, 9), bool)
    truth[2:7, 2:7] = True
    pred = truth.copy()
    pred[16, 4] = True  # 10 rows below the bottom edge row 6
    assert sm.hd95(pred, truth) == pytest.approx(2.0)
    assert sm.hd95(truth, pred) == pytest.approx(2.0)  # symmetric
    assert sm.hd95(pred, truth, percentile=100) == pytest.approx(10.0)


def _brute_hd(a: np.ndarray, b: np.ndarray, q: float = 95) -> float:
    """Boundary by definition (a mask pixel with a 4-neighbour outside the mask or the image), all pairs."""
    def edge(m: np.ndarray) -> np.ndarray:
        p = np.pad(m, 1)
        inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
        return np.argwhere(m & ~inner).astype(float)

    ea, eb = edge(a), edge(b)
    dist = np.sqrt(((ea[:, None, :] - eb[None, :, :]) ** 2).sum(-1))
    return max(np.percentile(dist.min(axis=1), q), np.percentile(dist.min(axis=0), q))


def test_hd95_matches_a_brute_force_definition_on_random_masks():
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.uniform(size=(14, 11)) < 0.3
        b = rng.uniform(size=(14, 11)) < 0.3
        a[0, 0] = b[-1, -1] = True  # never empty, and touching the image edge
        assert sm.hd95(a, b) == pytest.approx(_brute_hd(a, b))


def test_a_class_absent_from_both_is_skipped_and_empty_masks_leave_hd95_undefined():
    truth = np.zeros((4, 6, 6), np.int64)
    pred = np.zeros((4, 6, 6), np.int64)
    truth[0, 1:4, 1:4] = pred[0, 1:4, 1:4] = 1  # image 0: perfect (Dice 1, HD95 0)
    # image 1: no lesion, none predicted -> skipped (NaN), not a free 1.0
    pred[2, 0, 0] = 1  # image 2: no lesion, one false-positive pixel -> Dice 0, HD95 undefined
    truth[3, 2:4, 2:4] = 1  # image 3: lesion missed -> Dice 0, HD95 undefined
    dice = sm.dice_scores(pred, truth, 2)[:, 1]
    assert dice[0] == 1.0 and np.isnan(dice[1]) and dice[2] == 0.0 and dice[3] == 0.0
    r = sm.evaluate_segmentation(pred, truth, 2, resamples=50)
    assert r.mean_dice == pytest.approx(1 / 3)  # (1 + 0 + 0) / 3 images, image 1 skipped
    assert r.dice[1] == pytest.approx(1 / 3) and r.mean_hd95 == pytest.approx(0.0)
    assert r.hd95_undefined == [0, 2] and r.n_images == 4


def test_dice_where_present_and_false_alarms_split_the_mean_by_the_truth():
    truth = np.zeros((4, 6, 6), np.int64)
    pred = np.zeros((4, 6, 6), np.int64)
    truth[0, 1:4, 1:4] = pred[0, 1:4, 1:4] = 1  # lesion, found: Dice 1
    truth[1, 0:2, 0:2] = 1  # lesion of 4 px, half found: Dice 2·2/(2+4)
    pred[1, 0:2, 0:1] = 1
    pred[2, 5, 5] = 1  # no lesion, one stray pixel: a false alarm
    # image 3: no lesion, nothing marked
    r = sm.evaluate_segmentation(pred, truth, 2, resamples=50)
    assert r.mean_dice == pytest.approx((1 + 4 / 6 + 0) / 3)  # the false alarm counts as 0, image 3 skipped
    assert r.dice_present[1] == r.mean_dice_present == pytest.approx((1 + 4 / 6) / 2)
    assert r.false_alarms[1] == 1 and r.images_without[1] == 2
    assert sm.presence_split(pred, truth, 2) == (r.dice_present, r.mean_dice_present, r.false_alarms,
                                                 r.images_without)


def test_mean_excludes_background_unless_asked_and_averages_classes():
    truth = np.zeros((2, 4, 4), np.int64)
    truth[:, :2, :2], truth[:, 2:, 2:] = 1, 2
    pred = truth.copy()
    pred[1, 2:, 2:] = 0  # image 1 misses class 2: Dice 0 there; class 1 perfect everywhere
    r = sm.evaluate_segmentation(pred, truth, 3, hd=False, resamples=0)
    assert r.dice[1] == pytest.approx(1.0) and r.dice[2] == pytest.approx(0.5)
    assert r.mean_dice == pytest.approx(0.75) and r.dice_ci is None and r.hd95 is None
    with_bg = sm.evaluate_segmentation(pred, truth, 3, hd=False, resamples=0, include_background=True)
    assert with_bg.mean_dice == pytest.approx(np.mean(with_bg.dice))
    assert with_bg.mean_dice != pytest.approx(r.mean_dice)


def _noisy(seed: int, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, 16, 16), np.int64)
    for i in range(n):
        r = rng.integers(2, 6)
        truth[i, 8 - r : 8 + r, 8 - r : 8 + r] = 1
    flip = rng.uniform(size=truth.shape) < rng.uniform(0.02, 0.2, (n, 1, 1))
    return np.where(flip, 1 - truth, truth), truth


def test_bootstrap_ci_holds_the_estimate_and_is_deterministic_for_a_seed():
    pred, truth = _noisy(0)
    dice = sm.dice_scores(pred, truth, 2)
    est = sm.mean_score(dice)
    ci = sm.bootstrap_ci(dice, seed=1)
    assert ci is not None and ci[0] < est < ci[1] and ci[1] - ci[0] < 0.3
    assert sm.bootstrap_ci(dice, seed=1) == ci
    assert sm.bootstrap_ci(dice, seed=2) != ci
    assert sm.bootstrap_ci(dice[:, 1]) == sm.bootstrap_ci(dice)  # one class given as a vector
    assert sm.bootstrap_ci(dice, resamples=0) is None


def test_bootstrap_resamples_in_chunks_give_the_same_interval(monkeypatch):
    pred, truth = _noisy(4)
    dice = sm.dice_scores(pred, truth, 2)
    whole = sm.bootstrap_ci(dice, resamples=300, seed=7)
    monkeypatch.setattr(sm, "_CHUNK_WEIGHTS", 40 * 7)  # 7 resamples per chunk
    assert sm.bootstrap_ci(dice, resamples=300, seed=7) == pytest.approx(whole)


def test_paired_dice_difference_zero_for_the_same_model_and_positive_for_a_better_one():
    pred, truth = _noisy(1)
    same = sm.paired_dice_diff(pred, pred, truth, 2)
    assert same.dice_diff == 0.0 and same.ci == (0.0, 0.0)
    worse = np.where(np.random.default_rng(9).uniform(size=pred.shape) < 0.1, 1 - pred, pred)
    better = sm.paired_dice_diff(pred, worse, truth, 2, seed=3)
    expected = sm.mean_score(sm.dice_scores(pred, truth, 2)) - sm.mean_score(sm.dice_scores(worse, truth, 2))
    assert better.dice_diff == pytest.approx(expected) and better.dice_diff > 0
    assert better.ci is not None and 0 < better.ci[0] <= better.dice_diff <= better.ci[1]
    assert sm.paired_dice_diff(pred, worse, truth, 2, seed=3) == better


def test_overlap_counts_in_chunks_match_a_direct_count(monkeypatch):
    rng = np.random.default_rng(5)
    pred, truth = rng.integers(0, 3, (9, 5, 7)), rng.integers(0, 3, (9, 5, 7))
    monkeypatch.setattr(sm, "_CHUNK_PIXELS", 2 * 35)  # two images per chunk
    tp, fp, fn = sm.overlap_counts(pred, truth, 3)
    for i in range(9):
        for c in range(3):
            p, t = pred[i] == c, truth[i] == c
            assert (tp[i, c], fp[i, c], fn[i, c]) == ((p & t).sum(), (p & ~t).sum(), (~p & t).sum())


@pytest.mark.parametrize("pred, truth, k, words", [
    (np.zeros((2, 4, 4), int), np.zeros((2, 4, 5), int), 2, ["differ in shape", "same images"]),
    (np.zeros((2, 4, 4), np.float32), np.zeros((2, 4, 4), int), 2, ["dtype float32", "argmax"]),
    (np.full((1, 4, 4), 2), np.zeros((1, 4, 4), int), 2, ["class 2", "outside 0..1"]),
    (np.zeros((1, 4, 4), int), np.full((1, 4, 4), -1), 2, ["truth", "class -1"]),
    (np.zeros((4,), int), np.zeros((4,), int), 2, ["shape (4,)", "N×H×W"]),
    (np.zeros((1, 4, 4), int), np.zeros((1, 4, 4), int), 1, ["num_classes", ">= 2"]),
])
def test_bad_label_maps_give_one_line_errors(pred, truth, k, words):
    with pytest.raises(InputError) as e:
        sm.dice_scores(pred, truth, k)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_metrics_to_dict_is_plain_data():
    pred, truth = _squares()
    d = sm.evaluate_segmentation(pred, truth, 2, resamples=20).to_dict()
    assert d["mean_dice"] == pytest.approx(0.8) and d["mean_hd95"] == pytest.approx(1.0)
    assert isinstance(d["dice_ci"], list) and d["dice"][1] == pytest.approx(0.8)
