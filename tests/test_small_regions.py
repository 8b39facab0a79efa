"""The small-region rule of segmentation: regions smaller than any the train masks annotate are cleared
after the argmax, for each model whose val Dice this does not lower; the device runner does the same."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from edgekd.config import CompressConfig
from edgekd.device import runner
from edgekd.metrics.segmentation import derive_min_region, region_areas, remove_small_regions
from edgekd.tasks.segmentation import SegmentationTask


def _blob(h, w, top, left, size):
    m = np.zeros((h, w), np.uint8)
    m[top:top + size, left:left + size] = 1
    return m


def test_regions_are_8_connected_and_only_the_small_ones_are_cleared():
    pred = np.zeros((12, 12), np.uint8)
    pred[1:5, 1:5] = 1  # 16 px: kept
    pred[8, 8] = pred[9, 9] = pred[10, 10] = 1  # 3 px touching at corners: one region of 3, cleared
    pred[0, 11] = 2  # class 2 has its own rule
    out = remove_small_regions(pred, [0, 4, 0])
    assert out[1:5, 1:5].all() and not out[8:11, 8:11].any() and out[0, 11] == 2
    assert out.sum() == 16 + 2 and pred[9, 9] == 1  # a copy: the input is untouched
    assert [list(a) for a in region_areas(pred[None], 3)] == [[], [16, 3], [1]]
    # the rule compares with "smaller than": a region of exactly min_region pixels stays
    assert remove_small_regions(pred, [0, 3, 0])[9, 9] == 1


def test_the_smallest_region_kept_is_half_the_1st_percentile_of_the_train_regions():
    masks = np.stack([_blob(20, 20, 2, 2, s) for s in range(4, 14)] + [np.zeros((20, 20), np.uint8)])
    areas = np.array([s * s for s in range(4, 14)])
    assert derive_min_region(masks, 2) == [0, int(0.5 * np.percentile(areas, 1))]
    assert derive_min_region(np.zeros((3, 8, 8), np.uint8), 3) == [0, 0, 0]  # no region: nothing is cleared


def test_the_device_runner_clears_exactly_what_the_host_clears():
    rng = np.random.default_rng(0)
    for _ in range(100):
        k = int(rng.integers(2, 4))
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        pred = ((rng.random((2, h, w)) < rng.random()) * rng.integers(1, k, (2, h, w))).astype(np.uint8)
        rule = [0] + [int(v) for v in rng.integers(0, 10, k - 1)]
        np.testing.assert_array_equal(runner.remove_small_regions(pred, rule), remove_small_regions(pred, rule))
    snake = np.zeros((64, 64), bool)  # one long winding region: 32 rows joined at alternating ends
    snake[::2, :] = True
    snake[1::4, -1] = True
    snake[3::4, 0] = True
    labels, areas = runner.region_labels(snake)
    assert len(np.unique(labels[snake])) == 1 and areas[labels[0, 0]] == snake.sum()


def test_the_runner_reads_the_rule_from_labels_json_and_the_flag_overrides_it(tmp_path):
    model = tmp_path / "model.onnx"
    assert runner.pick_min_region(None, str(model), 2)["value"] is None  # no labels.json: every region kept
    (tmp_path / "labels.json").write_text(json.dumps({"min_region": [0, 25]}))
    got = runner.pick_min_region(None, str(model), 2)
    assert got["value"] == [0, 25] and got["source"].startswith("labels.json")
    assert runner.pick_min_region(0, str(model), 2)["value"] == [0, 0]
    (tmp_path / "labels.json").write_text(json.dumps({"min_region": [0, -3]}))
    with pytest.raises(runner.RunnerError, match="min_region"):
        runner.pick_min_region(None, str(model), 2)


def _logits(pred: np.ndarray) -> np.ndarray:
    """Two-class logits whose argmax is ``pred``."""
    fg = np.where(pred > 0, 2.0, -2.0).astype(np.float32)
    return np.stack([-fg, fg], axis=1)


def _scores(val_pred, val_masks, test_pred, test_masks, rule):
    cfg = CompressConfig()
    cfg.bench.bootstrap_resamples = 0
    return SegmentationTask().evaluate(SimpleNamespace(metrics=None), _logits(val_pred), val_masks, _logits(test_pred),
                                       test_masks, cfg, None, 2, 0, rule)


def test_a_model_keeps_the_rule_when_its_val_dice_does_not_drop():
    lesion, empty = _blob(16, 16, 4, 4, 6), np.zeros((16, 16), np.uint8)
    speck = empty.copy()
    speck[12, 12] = 1  # a false alarm of one pixel on a lesion-free image
    masks = np.stack([lesion, empty])
    s = _scores(np.stack([lesion, speck]), masks, np.stack([lesion, speck]), masks, [0, 5])
    assert s.decision["applied"] and s.decision["val_dice_argmax"] == pytest.approx(0.5)
    assert s.val_dice == pytest.approx(1.0) and s.dice == pytest.approx(1.0)  # test is scored on cleared masks too
    assert s.min_region == [0, 5] and s.test_pred[1].sum() == 0


def test_a_model_whose_small_true_lesions_the_rule_would_erase_keeps_every_region():
    small = np.zeros((16, 16), np.uint8)
    small[3:5, 3:5] = 1  # a true 4-px lesion, found
    masks = np.stack([small, small])
    s = _scores(masks, masks, masks, masks, [0, 9])
    assert not s.decision["applied"] and s.min_region is None
    assert s.val_dice == pytest.approx(1.0) and s.test_pred.sum() == 8


def test_labels_json_carries_the_rule_only_when_the_shipped_model_kept_it():
    data = SimpleNamespace(class_names=["background", "lesion"], num_classes=2)
    kept = {"metrics": {"decision": {"min_region": [0, 12], "applied": True}}}
    dropped = {"metrics": {"decision": {"min_region": [0, 12], "applied": False}}}
    assert SegmentationTask().labels_json(kept, data)["min_region"] == [0, 12]
    assert SegmentationTask().labels_json(dropped, data)["min_region"] is None
