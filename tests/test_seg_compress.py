"""Compressing a U-Net student: channel pruning keeps the skip concatenations, INT8 PTQ, QDQ ONNX in ORT."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekd.errors import InputError
from edgekd.lower.onnx import OnnxRuntimeRunner, count_ops, export_onnx
from edgekd.models.segmentation import create_seg_student
from edgekd.prune.segmentation import prune_seg_to, seg_head_name, seg_taylor_grads
from edgekd.quantize import quantize_ptq, strip_for_export
from edgekd.quantize.int8 import _shared_quantizers

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # legacy ONNX exporter, nncf/torchao
              pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]  # nncf hooks during ONNX tracing

K = 3
X = torch.zeros(1, 1, 64, 64)


def _skip_channels_line_up(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, int]]:
    """Check each decoder block's input = (previous stage) + (its encoder skip); return (in, skip) per block."""
    with torch.no_grad():
        feats = model.encoder(x)[1:][::-1]  # smp: drop the input, deepest first
    head, skips = feats[0], feats[1:]
    prev, seen = head.shape[1], []
    for i, block in enumerate(model.decoder.blocks):
        skip = skips[i].shape[1] if i < len(skips) else 0
        assert block.conv1[0].in_channels == prev + skip, (i, block.conv1[0].in_channels, prev, skip)
        seen.append((block.conv1[0].in_channels, skip))
        prev = block.conv2[0].out_channels
    assert model.segmentation_head[0].in_channels == prev
    return seen


@pytest.mark.parametrize("name", ["unet-efficientnet_b0", "unet-mobilenetv3_small_050", "unet-lcnet_050"])
# the default (inverted residuals with SE); SE + hard-swish; plain depthwise
def test_pruning_removes_channels_and_the_skip_concatenations_survive(name):
    model = create_seg_student(name, 1, K, seed=0).eval()
    before = _skip_channels_line_up(model, X)
    res = prune_seg_to(model, X, int(0.5 * _macs(model)))
    assert res.macs_after <= 0.5 * res.macs_before and res.macs_after < res.macs_before
    assert res.params_after < res.params_before and 0 < res.channel_ratio < 1
    after = _skip_channels_line_up(res.model, X)
    assert all(a[0] <= b[0] for a, b in zip(after, before)) and any(a[0] < b[0] for a, b in zip(after, before))
    assert any(a[1] < b[1] for a, b in zip(after, before))  # encoder skips lost channels too
    assert res.model.segmentation_head[0].out_channels == K  # the logits layer is never pruned
    with torch.no_grad():
        assert res.model(torch.randn(2, 1, 64, 64)).shape == (2, K, 64, 64)
        assert res.model(torch.randn(1, 1, 96, 64)).shape == (1, K, 96, 64)
    assert _skip_channels_line_up(model, X) == before  # the input model is left as it was


def test_taylor_importance_prunes_with_the_segmentation_loss_gradients():
    model = create_seg_student("unet-mobilenetv3_small_050", 1, 2, seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 64, 64, generator=g)
    grads = seg_taylor_grads(model, x, torch.randn(2, 2, 64, 64, generator=g), torch.randint(0, 2, (2, 64, 64)),
                             temperature=2.0, alpha=0.5)
    assert grads and all(torch.isfinite(v).all() for v in grads.values())
    res = prune_seg_to(model, x[:1], int(0.6 * _macs(model, x[:1])), importance="taylor", grads=grads)
    assert res.macs_after < res.macs_before
    with pytest.raises(InputError, match="needs gradients"):
        prune_seg_to(model, x[:1], 10**6, importance="taylor")
    with pytest.raises(InputError, match="did you mean 'magnitude'"):
        prune_seg_to(model, x[:1], 10**6, importance="magnitud")


def test_the_head_is_found_by_name():
    model = create_seg_student("unet-lcnet_050", 1, 2)
    assert seg_head_name(model) == "segmentation_head.0"
    assert seg_head_name(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 2, 1))) == "1"


def _macs(model: torch.nn.Module, x: torch.Tensor = X) -> int:
    from edgekd.models.stats import count_macs

    return count_macs(model, x)


def test_int8_ptq_and_qdq_onnx_of_a_pruned_unet_run_in_onnx_runtime(tmp_path):
    model = create_seg_student("unet-mobilenetv3_small_050", 1, 2, seed=0).eval()
    model = prune_seg_to(model, X, int(0.7 * _macs(model))).model
    g = torch.Generator().manual_seed(0)
    calib = torch.rand(8, 1, 64, 64, generator=g)
    q = quantize_ptq(model, calib)
    assert _shared_quantizers(q)  # the skip concats share quantizers: the case strip_for_export must fix
    x = calib[:2]
    with torch.no_grad():
        ref, fq = model(x), q(x)
    assert fq.shape == (2, 2, 64, 64)
    assert float((ref.argmax(1) == fq.argmax(1)).float().mean()) > 0.95
    path = export_onnx(strip_for_export(q, calib[:1]), calib[:1], tmp_path / "student_int8.onnx")
    ops = count_ops(path)
    assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
    out = OnnxRuntimeRunner(path, threads=1)(x.numpy())
    assert out.shape == (2, 2, 64, 64)
    assert float((out.argmax(1) == fq.numpy().argmax(1)).mean()) > 0.99


def test_fp32_onnx_of_a_student_matches_torch_at_an_odd_size(tmp_path):
    model = create_seg_student("unet-lcnet_050", 1, 2, seed=0).eval()
    x = torch.randn(2, 1, 65, 47, generator=torch.Generator().manual_seed(0))
    path = export_onnx(model, x[:1], tmp_path / "student.onnx")
    out = OnnxRuntimeRunner(path, threads=1)(x.numpy())
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), atol=1e-4)
