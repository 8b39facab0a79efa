"""Structural pruning to a MACs budget: real channel removal on residual, SE and depthwise models."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from edgekd._compat import import_timm
from edgekd.config import DistillConfig, PruneConfig
from edgekd.data._base import Dataset
from edgekd.distill import TeacherSignal
from edgekd.errors import InputError
from edgekd.models.stats import count_macs, count_params
from edgekd.prune import PruneResult, prune

from ._square import oracle_logits, square_dataset

TOLERANCE = 0.05  # final MACs must lie in [(1 - TOLERANCE)·target, target]


@pytest.fixture(scope="module")
def data() -> Dataset:
    return square_dataset(48, 32, 16)


@pytest.fixture(scope="module")
def tl(data: Dataset) -> TeacherSignal:
    """Teacher logits that know the answer (the pruned student only needs something to fit)."""
    return oracle_logits(data, 2.0)


def student(name: str) -> torch.nn.Module:
    return import_timm().create_model(name, pretrained=False, in_chans=1, num_classes=2)


DCFG = DistillConfig(batch_size=24)


@pytest.mark.parametrize("name", ["mobilenetv3_small_050", "resnet10t"])  # SE + depthwise + hard-swish; residual adds
def test_prune_reaches_macs_target_and_removes_channels(name, data, tl):
    model = student(name)
    convs_before = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    res = prune(model, data, tl, PruneConfig(depth=0, ratio=0.5, steps=2), DCFG,
                finetune_steps=6, recovery_steps=6)
    assert isinstance(res, PruneResult)
    target = 0.5 * res.macs_before
    assert (1 - TOLERANCE) * target <= res.macs_after <= target
    assert res.macs_after == count_macs(res.model, data.train.images[:1])
    assert res.params_after == count_params(res.model) < 0.7 * res.params_before
    # real structural removal: layers have fewer output channels, not zeroed weights
    convs_after = [m.out_channels for m in res.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs_after) == len(convs_before) and sum(convs_after) < 0.8 * sum(convs_before)
    # the schedule: one entry per step, MACs falling toward the target, each step fine-tuned
    assert [s["step"] for s in res.steps] == [1, 2]
    assert res.steps[0]["macs"] > res.steps[1]["macs"] == res.macs_after
    assert res.steps[0]["macs"] <= 0.75 * res.macs_before
    assert all(0.0 <= s["val_auc"] <= 1.0 for s in res.steps)
    # after the last step, an early-stopped recovery distillation that never makes val worse
    assert res.steps[-1]["recovery_steps"] == 6
    assert res.steps[-1]["val_auc_after_recovery"] >= res.steps[-1]["val_auc"]
    # the pruned model still classifies into the same classes
    assert not res.model.training
    with torch.no_grad():
        assert res.model(data.val.images[:5]).shape == (5, 2)
    # the input model was not modified
    assert [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)] == convs_before


def test_a_ratio_past_the_last_channels_keeps_the_smallest_and_says_so_in_one_line(data, tl):
    import warnings

    from edgekd.prune.pruner import unreached_text

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the run's log says it, not a warning
        res = prune(student("lcnet_050"), data, tl, PruneConfig(depth=0, ratio=0.94, steps=2), DCFG,
                    finetune_steps=0, recovery_steps=0)
    first, last = res.steps
    assert first["target_reached"] is True and first["macs"] <= first["target_macs"]
    assert last["target_reached"] is False and last["target_macs"] < last["macs"] == res.macs_after < res.macs_before
    line = unreached_text(res.steps, 0.94)
    assert "\n" not in line and line.startswith(f"prune: channel step 2 ({last['target_macs'] / 1e6:.2f} M) stopped short")
    assert "last channels" in line and "--prune-ratio 0.94" in line
    assert unreached_text([first], 0.94) is None


@pytest.mark.parametrize("name, importance", [("lcnet_050", "taylor"), ("efficientnet_b0", "magnitude"),
                                              ("mobilenetv3_small_050", "taylor")])
def test_prune_other_students_one_step(name, importance, data, tl):
    cfg = PruneConfig(depth=0, ratio=0.3, steps=1, importance=importance)
    res = prune(student(name), data, tl, cfg, DCFG)
    assert (1 - TOLERANCE) * 0.7 * res.macs_before <= res.macs_after <= 0.7 * res.macs_before
    assert res.params_after < res.params_before
    assert res.model(data.val.images[:3]).shape == (3, 2)


def test_ratio_zero_is_a_no_op(data, tl):
    model = student("mobilenetv3_small_050")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = prune(model, data, tl, PruneConfig(depth=0, ratio=0.0), DCFG)
    assert res.model is model and res.steps == []
    assert res.macs_after == res.macs_before and res.params_after == res.params_before
    assert all(torch.equal(before[k], v) for k, v in res.model.state_dict().items())


def test_a_ratio_and_temperature_left_unset_are_the_tasks_defaults():
    """Classifiers lose 80 % of their MACs at T = 4; U-Net students only whole blocks, at T = 1 per pixel."""
    from dataclasses import replace

    from edgekd.config import CompressConfig
    from edgekd.tasks import get_task

    assert PruneConfig().ratio is None
    assert get_task("classification").with_defaults(CompressConfig()).prune.ratio == 0.8
    seg = CompressConfig(task="segmentation")
    assert get_task("segmentation").with_defaults(seg).prune.ratio == 0.0
    asked = replace(seg, prune=replace(seg.prune, ratio=0.5), distill=replace(seg.distill, temperature=2.0))
    assert get_task("segmentation").with_defaults(asked).prune.ratio == 0.5  # an explicit ratio is kept
    assert CompressConfig().distill.temperature is None
    assert get_task("classification").with_defaults(CompressConfig()).distill.temperature == 4.0
    assert get_task("segmentation").with_defaults(seg).distill.temperature == 1.0
    assert get_task("segmentation").with_defaults(asked).distill.temperature == 2.0


@pytest.mark.parametrize("ratio", [-0.1, 0.95, 1.0, math.nan, "half"])
def test_bad_ratio_is_rejected(ratio, data, tl):
    with pytest.raises(InputError, match="prune ratio"):
        prune(student("resnet10t"), data, tl, PruneConfig(depth=0, ratio=ratio), DCFG)


def test_unknown_importance_lists_allowed_values(data, tl):
    with pytest.raises(InputError, match="magnitude, taylor"):
        prune(student("resnet10t"), data, tl, PruneConfig(importance="l1"), DCFG)


def test_bad_steps_are_rejected(data, tl):
    with pytest.raises(InputError, match="steps"):
        prune(student("resnet10t"), data, tl, PruneConfig(depth=0, steps=0), DCFG)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter is the one that works here
def test_pruned_model_exports_to_onnx_and_quantizes_with_nncf(data, tl):
    import onnxruntime as ort

    from edgekd.quantize import quantize_ptq

    res = prune(student("mobilenetv3_small_050"), data, tl, PruneConfig(depth=0, ratio=0.5, steps=1), DCFG,
                finetune_steps=0, recovery_steps=6)
    x = data.val.images[:4]
    buf = io.BytesIO()
    torch.onnx.export(res.model, x[:1], buf, dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        ref = res.model(x).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    q = quantize_ptq(res.model, data.train.images[:16])  # NNCF traces the pruned graph
    with torch.no_grad():
        assert q(x).shape == (4, 2)
