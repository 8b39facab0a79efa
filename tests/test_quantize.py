"""INT8 with NNCF: PTQ agrees with fp32, QAT trains the quantized model, QDQ ONNX export runs in ORT."""
from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch

from edgekd._compat import import_timm
from edgekd.config import DistillConfig, QuantConfig
from edgekd.data._base import Dataset
from edgekd.distill import DistillResult, TeacherSignal, distill, predict_logits
from edgekd.errors import InputError
from edgekd.metrics.classification import roc_auc
from edgekd.quantize import (
    calibration_subset,
    quantize_ptq,
    quantize_qat,
    strip_for_export,
)

from ._square import oracle_logits, square_dataset

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # legacy ONNX exporter, nncf/torchao
              pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]  # nncf hooks during ONNX tracing


@pytest.fixture(scope="module")
def data() -> Dataset:
    return square_dataset(256, 128, 128)


@pytest.fixture(scope="module")
def tl(data: Dataset) -> TeacherSignal:
    return oracle_logits(data, 3.0)  # a confident teacher that knows the labels


DCFG = DistillConfig(batch_size=32, lr=3e-3, patience=3)


@pytest.fixture(scope="module")
def trained(data: Dataset, tl: TeacherSignal) -> torch.nn.Module:
    """A small trained fp32 model (timm resnet10t: residual adds; it learns this task in one epoch)."""
    torch.manual_seed(0)
    model = import_timm().create_model("resnet10t", pretrained=False, in_chans=1, num_classes=2)
    res = distill(model, data, tl, DistillConfig(batch_size=32, lr=3e-3), steps=12)
    assert res.best_val_auc > 0.9, res.history
    return res.model


@pytest.fixture(scope="module")
def qmodel(trained: torch.nn.Module, data: Dataset) -> torch.nn.Module:
    return quantize_ptq(trained, calibration_subset(data.train, 64, seed=0))


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


def test_calibration_subset_is_seeded_and_capped(data):
    a, b = calibration_subset(data.train, 50, seed=3), calibration_subset(data.train, 50, seed=3)
    assert a.shape == (50, 1, 32, 32) and torch.equal(a, b)
    assert not torch.equal(a, calibration_subset(data.train, 50, seed=4))
    assert len(calibration_subset(data.train, 10_000, seed=0)) == len(data.train)
    with pytest.raises(InputError, match="calibration samples"):
        calibration_subset(data.train, 0, seed=0)


def test_ptq_agrees_with_fp32(trained, qmodel, data):
    x = data.test.images
    fp32, int8 = predict_logits(trained, x).numpy(), predict_logits(qmodel, x).numpy()
    assert _agreement(fp32, int8) >= 0.95
    assert not np.allclose(fp32, int8)  # it really is quantized
    assert roc_auc(int8, data.test.labels.numpy()) > 0.9


def test_ptq_leaves_the_fp32_model_alone(trained, qmodel):
    assert not any("nncf" in k for k in trained.state_dict())
    assert any("nncf" in k for k in qmodel.state_dict())


def test_ptq_subset_size_and_plain_sequential(data):
    seq = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    q = quantize_ptq(seq, data.train.images[:32], subset_size=8)
    x = data.val.images[:16]
    assert _agreement(predict_logits(seq, x).numpy(), predict_logits(q, x).numpy()) >= 0.9


@pytest.mark.parametrize("bad", [torch.zeros(0, 1, 32, 32), torch.zeros(4, 32, 32)])
def test_ptq_rejects_bad_calibration(trained, bad):
    with pytest.raises(InputError, match="N×C×H×W"):
        quantize_ptq(trained, bad)


def test_quantized_model_deepcopies_and_restores_state(qmodel, data):
    x = data.val.images[:8]
    clone = copy.deepcopy(qmodel)
    state = copy.deepcopy(qmodel.state_dict())
    with torch.no_grad():
        for p in clone.parameters():
            if p.is_floating_point():
                p.add_(0.05)
        assert not torch.allclose(clone(x), qmodel(x))
        clone.load_state_dict(state)
        assert torch.equal(clone(x), qmodel(x))


def test_qat_trains_the_quantized_model(qmodel, data, tl):
    q = copy.deepcopy(qmodel)
    res = quantize_qat(q, data, tl, QuantConfig(qat_lr=1e-3), DCFG, steps=12, seed=0)
    assert isinstance(res, DistillResult)
    assert 1 <= res.steps_run <= 12 and 0.9 < res.best_val_auc <= 1.0
    assert res.best_val_auc >= res.initial_val_auc
    got = roc_auc(predict_logits(res.model, data.val.images).numpy(), data.val.labels.numpy())
    assert got == pytest.approx(res.best_val_auc, abs=1e-12)  # the best state restored on an NNCF model
    assert any("nncf" in k for k in res.model.state_dict())  # still quantized


def test_qat_rejects_bad_config(qmodel, data, tl):
    with pytest.raises(InputError, match="QAT learning rate"):
        quantize_qat(qmodel, data, tl, QuantConfig(qat_lr=0.0), DCFG, steps=1)


def _constants(model) -> dict[str, np.ndarray]:
    """Every constant tensor of an ONNX graph by name: initializers, Constant nodes, Identity of those."""
    import onnx

    consts = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in consts:
            consts[node.output[0]] = consts[node.input[0]]
    return consts


def test_strip_for_export_gives_symmetric_qdq_onnx_that_ort_runs(qmodel, data):
    import onnx
    import onnxruntime as ort

    x = data.test.images
    stripped = strip_for_export(qmodel, x[:1])
    buf = io.BytesIO()
    torch.onnx.export(stripped, x[:1], buf, dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    graph = onnx.load_from_string(buf.getvalue())
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") >= ops.count("QuantizeLinear")
    assert not any(n.domain.startswith("org.openvinotoolkit") for n in graph.graph.node)
    consts = _constants(graph)
    zero_points = [consts[n.input[2]] for n in graph.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    assert len(zero_points) >= ops.count("QuantizeLinear") and all((z == 0).all() for z in zero_points)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    onnx_logits = sess.run(None, {"x": x.numpy()})[0]
    assert _agreement(onnx_logits, predict_logits(qmodel, x).numpy()) >= 0.95
