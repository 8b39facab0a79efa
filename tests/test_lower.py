"""Lowering to ONNX Runtime and OpenVINO: exports run, agree with torch, and fail cleanly."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.errors import InputError, LoweringError, MissingDependencyError, TargetError
from edgekd.lower import RUNTIMES, get_backend
from edgekd.lower._base import Runner, predict_batched
from edgekd.lower.onnx import OnnxRuntimeRunner, count_ops, export_onnx
from edgekd.lower.openvino import OpenVINORunner, export_openvino, quantize_openvino_ptq
from edgekd.lower.torch import TorchRunner
from edgekd.lower.validate import check_agreement

SHAPE = (1, 32, 32)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    from edgekd._compat import import_timm

    torch.manual_seed(0)
    return import_timm().create_model("mobilenetv3_small_050", pretrained=False, in_chans=1, num_classes=2).eval()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((48, *SHAPE)).astype(np.float32)


@pytest.fixture(scope="module")
def example() -> torch.Tensor:
    return torch.zeros(1, *SHAPE)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lower")


@pytest.fixture(scope="module")
def reference(model, images) -> np.ndarray:
    return predict_batched(TorchRunner(model, threads=2), images)


@pytest.fixture(scope="module")
def fp32_onnx(model, example, out_dir) -> Path:
    return export_onnx(model, example, out_dir / "student.onnx")


@pytest.fixture(scope="module")
def quantized(model, images):
    """An NNCF INT8 (fake-quant) copy of the model and its native-QDQ stripped twin."""
    import nncf

    calib = torch.from_numpy(images[:8])
    fast = nncf.AdvancedQuantizationParameters(disable_bias_correction=True)  # halves the time; quality is not tested here
    q = nncf.quantize(copy.deepcopy(model), nncf.Dataset([calib[i:i + 1] for i in range(8)]), subset_size=8,
                      advanced_parameters=fast)
    stripped = nncf.strip(q, do_copy=True, strip_format=nncf.StripFormat.NATIVE, example_input=calib[:1])
    return q.eval(), stripped.eval()


# --- registry -------------------------------------------------------------------------------

def test_registry_lists_runtimes_and_loads_backends_lazily():
    assert RUNTIMES == ("torch", "onnxruntime", "openvino", "tensorrt")
    onnx_backend = get_backend("onnxruntime")
    assert onnx_backend.__name__ == "edgekd.lower.onnx" and callable(onnx_backend.open_runner)
    assert get_backend("openvino").__name__ == "edgekd.lower.openvino"


def test_unknown_backend_suggests_the_closest_name():
    with pytest.raises(TargetError, match="did you mean 'openvino'"):
        get_backend("openvno")


def test_absent_backend_module_is_a_missing_dependency(monkeypatch):
    import dataclasses

    import edgekd.lower as lower

    missing = dataclasses.replace(lower.BACKENDS["tensorrt"], module="edgekd.lower._no_such_backend")
    monkeypatch.setitem(lower.BACKENDS, "tensorrt", missing)
    with pytest.raises(MissingDependencyError, match="tensorrt"):
        get_backend("tensorrt")


# --- fp32 -----------------------------------------------------------------------------------

def test_fp32_onnx_runs_in_onnxruntime_and_agrees(fp32_onnx, images, reference):
    import onnx

    graph = onnx.load(str(fp32_onnx)).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["logits"]
    runner = OnnxRuntimeRunner(fp32_onnx, threads=2)
    assert isinstance(runner, Runner) and runner.path == fp32_onnx
    result = check_agreement("student fp32 onnxruntime", reference, predict_batched(runner, images, 5), precision="fp32")
    assert result.ok and result.agreement == 1.0 and result.n == len(images)
    assert result.max_abs_diff <= 1e-4
    assert runner(images[:1]).shape == (1, 2)  # dynamic batch: 1 and 5 both run


@pytest.mark.parametrize("from_onnx", [False, True], ids=["from-torch", "from-onnx"])
def test_fp32_openvino_ir_runs_in_f32_and_agrees(model, example, fp32_onnx, out_dir, images, reference, from_onnx):
    source = fp32_onnx if from_onnx else model
    xml = export_openvino(source, example, out_dir / f"student_{from_onnx}.xml")
    assert xml.suffix == ".xml" and xml.with_suffix(".bin").is_file()
    runner = OpenVINORunner(xml, threads=2, precision="fp32")
    assert runner.config["INFERENCE_PRECISION_HINT"] == "f32"  # not the CPU's silent bf16 default
    assert runner.config["INFERENCE_NUM_THREADS"] == 2 and runner.config["NUM_STREAMS"] == 1
    assert set(runner.config["compute_layer_precisions"]) == {"f32"}
    result = check_agreement("student fp32 openvino", reference, predict_batched(runner, images, 7), precision="fp32")
    assert result.ok and result.max_abs_diff <= 1e-4


def test_openvino_bf16_only_when_asked(fp32_onnx, images, reference):
    try:
        runner = OpenVINORunner(fp32_onnx, threads=2, precision="bf16")
    except LoweringError as exc:
        pytest.skip(f"this CPU has no bf16: {exc}")
    assert runner.config["INFERENCE_PRECISION_HINT"] == "bf16"
    assert check_agreement("student bf16 openvino", reference, predict_batched(runner, images), precision="bf16").ok


def test_openvino_input_of_the_wrong_shape_is_one_line_error(fp32_onnx):
    runner = OpenVINORunner(fp32_onnx, threads=1)
    with pytest.raises(LoweringError, match=r"shape \(1, 3, 32, 32\)"):
        runner(np.zeros((1, 3, 32, 32), np.float32))


def test_unsupported_precision_is_an_input_error(fp32_onnx):
    with pytest.raises(InputError, match="fp16"):
        OpenVINORunner(fp32_onnx, threads=2, precision="fp16")


def test_torch_runner_uses_its_threads_and_restores_them():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(torch.get_num_threads())
            return x.flatten(1)[:, :2]

    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    out = TorchRunner(Probe(), threads=target)(np.ones((3, 1, 2, 2), np.float32))
    assert out.dtype == np.float32 and out.shape == (3, 2)
    assert seen == [target] and torch.get_num_threads() == before


# --- int8 -----------------------------------------------------------------------------------

def test_int8_qdq_onnx_runs_in_onnxruntime_and_agrees_with_fake_quant(quantized, example, out_dir, images):
    fake_quant, stripped = quantized
    path = export_onnx(stripped, example, out_dir / "student_int8.onnx")
    ops = count_ops(path)
    assert ops.get("QuantizeLinear", 0) > 10 and ops.get("DequantizeLinear", 0) > 10
    reference = predict_batched(TorchRunner(fake_quant, threads=2, precision="int8"), images)
    runner = OnnxRuntimeRunner(path, threads=2, precision="int8")
    result = check_agreement("student int8 onnxruntime", reference, predict_batched(runner, images), precision="int8")
    assert result.ok and result.agreement >= 0.97


def test_int8_openvino_from_the_nncf_model_runs_int8_and_agrees(quantized, example, out_dir, images):
    fake_quant, _ = quantized
    xml = export_openvino(fake_quant, example, out_dir / "student_int8.xml")
    runner = OpenVINORunner(xml, threads=2, precision="int8")
    assert runner.config["INFERENCE_PRECISION_HINT"] == "f32"
    layers = runner.config["compute_layer_precisions"]
    assert layers.get("i8", 0) + layers.get("u8", 0) > 0, layers
    reference = predict_batched(TorchRunner(fake_quant, threads=2, precision="int8"), images)
    assert check_agreement("student int8 openvino", reference, predict_batched(runner, images), precision="int8").ok


def test_unstripped_nncf_model_is_refused_with_the_fix(quantized, example, tmp_path):
    fake_quant, _ = quantized
    with pytest.raises(LoweringError, match="nncf.strip"):
        export_onnx(fake_quant, example, tmp_path / "q.onnx")
    assert os.listdir(tmp_path) == []


def test_openvino_ptq_of_fp32_onnx_runs(fp32_onnx, out_dir, images, reference):
    xml = quantize_openvino_ptq(fp32_onnx, images[:16], out_dir / "teacher_ptq.xml", subset_size=8)
    runner = OpenVINORunner(xml, threads=2, precision="int8")
    layers = runner.config["compute_layer_precisions"]
    assert layers.get("i8", 0) + layers.get("u8", 0) > 0, layers
    result = check_agreement("teacher ptq openvino", reference, predict_batched(runner, images), precision="int8", strict=False)
    assert result.n == len(images) and np.isfinite(result.max_abs_diff)


def test_ptq_rejects_calibration_of_the_wrong_shape(fp32_onnx, tmp_path):
    with pytest.raises(InputError, match="calibration"):
        quantize_openvino_ptq(fp32_onnx, np.zeros((4, 3, 32, 32), np.float32), tmp_path / "x.xml")


# --- validation catches what it must ---------------------------------------------------------

def test_perturbed_logits_fail_the_check(reference):
    noisy = reference + np.random.default_rng(1).normal(0, 0.5, reference.shape)
    with pytest.raises(LoweringError, match="disagrees with its torch source"):
        check_agreement("noisy", reference, noisy, precision="int8")
    result = check_agreement("noisy", reference, noisy, precision="int8", strict=False)
    assert not result.ok and result.max_abs_diff > result.max_abs_diff_allowed


def test_model_with_a_swapped_weight_fails_the_check(model, example, tmp_path, images, reference):
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.classifier.weight.copy_(broken.classifier.weight.flip(0))
        broken.classifier.bias.copy_(broken.classifier.bias.flip(0))
    runner = OnnxRuntimeRunner(export_onnx(broken, example, tmp_path / "broken.onnx"), threads=2)
    with pytest.raises(LoweringError, match="agreement"):
        check_agreement("broken", reference, predict_batched(runner, images), precision="fp32")


def test_shape_mismatch_and_nan_are_lowering_errors():
    ref = np.zeros((4, 2), np.float32)
    with pytest.raises(LoweringError, match="shape"):
        check_agreement("x", ref, np.zeros((4, 3), np.float32), precision="fp32")
    with pytest.raises(LoweringError, match="NaN"):
        check_agreement("x", ref, np.full((4, 2), np.nan, np.float32), precision="fp32")
    with pytest.raises(InputError, match="did you mean 'int8'"):
        check_agreement("x", ref, ref, precision="int8x")


def test_segmentation_logits_are_compared_per_pixel():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(3, 2, 4, 4)).astype(np.float32)  # N×K×H×W
    same = check_agreement("seg", ref, ref + 1e-6, precision="fp32")
    assert same.ok and same.n == 3 and same.agreement == 1.0
    flipped = ref.copy()
    flipped[0, :, 0, 0] = ref[0, ::-1, 0, 0] + np.array([-5.0, 5.0])  # one pixel of 48 changes class
    result = check_agreement("seg", ref, flipped, precision="int8", strict=False)
    assert not result.ok and result.agreement == pytest.approx(47 / 48)
    with pytest.raises(LoweringError, match="N×K×H×W"):
        check_agreement("seg", ref, ref[:, :, :2], precision="fp32")


def test_fp32_near_ties_are_not_disagreements_but_int8_flips_are():
    ref = np.array([[0.5, 0.5 + 1e-7], [2.0, -1.0]])
    cand = np.array([[0.5 + 1e-7, 0.5], [2.0, -1.0]])
    assert check_agreement("tie", ref, cand, precision="fp32").agreement == 1.0
    assert check_agreement("tie", ref, cand, precision="int8", strict=False).agreement == 0.5


# --- failed exports leave nothing behind ------------------------------------------------------

class _Broken(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def test_failed_onnx_export_leaves_no_file(example, tmp_path):
    with pytest.raises(LoweringError, match="boom"):
        export_onnx(_Broken(), example, tmp_path / "bad.onnx")
    assert os.listdir(tmp_path) == []


def test_failed_openvino_export_leaves_no_file(example, tmp_path):
    with pytest.raises(LoweringError):
        export_openvino(_Broken(), example, tmp_path / "bad.xml")
    assert os.listdir(tmp_path) == []


def test_predict_batched_rejects_a_runner_with_the_wrong_output():
    class Bad:
        backend, precision, path = "fake", "fp32", None

        def __call__(self, x):
            return np.zeros((1, 2), np.float32)

    with pytest.raises(LoweringError, match="shape"):
        predict_batched(Bad(), np.zeros((4, 1, 2, 2), np.float32), batch_size=4)


def test_a_per_pixel_bound_is_held_by_all_but_the_rarest_pixels_not_by_the_single_worst():
    """Seen on the 128×128 U-Net benchmark: OpenVINO INT8 agreed on 100 % of pixels, but one pixel in
    millions had |Δ| 1.5 against 1.1 allowed and stopped the run. A classifier's single worst logit stays
    the check."""
    from edgekd.lower.validate import PIXEL_QUANTILE

    rng = np.random.default_rng(1)
    ref = rng.normal(size=(4, 2, 64, 64)).astype(np.float32)
    cand = ref + 0.01
    cand[0, :, 0, 0] += np.array([2.0, 2.0], dtype=np.float32)  # one of 16 384 pixels, same class order
    a = check_agreement("seg int8", ref, cand, precision="int8")
    assert a.ok and a.max_abs_diff == pytest.approx(2.01, abs=1e-4) and a.checked_abs_diff < 0.02
    assert "percentile" in a.summary() and PIXEL_QUANTILE < 1
    with pytest.raises(LoweringError, match="disagrees"):  # every pixel off: the quantile sees it
        check_agreement("seg int8", ref, ref + 0.6 * np.abs(ref).max(), precision="int8")
    flat = rng.normal(size=(64, 2)).astype(np.float32)
    one = flat.copy()
    one[0] += 2.0
    assert not check_agreement("cls int8", flat, one, precision="int8", strict=False).ok


def test_an_int8_u_net_off_by_a_fifth_of_its_logit_range_on_rare_pixels_passes_a_classifier_does_not():
    """Measured on the segmentation benchmark: OpenVINO INT8 of a U-Net student was off its NNCF torch source by
    0.153·s at the 99.99th percentile of pixels (s = the logits' largest magnitude) with 100.0 % agreement and
    failed the classifiers' 0.15·s bound. Per-pixel INT8 outputs are held to PIXEL_INT8_REL instead; an export
    that loses the foreground class still fails, and a classifier keeps 0.15·s."""
    from edgekd.lower.validate import PIXEL_INT8_REL, PIXEL_QUANTILE

    rng = np.random.default_rng(2)
    ref = np.zeros((8, 2, 32, 32), dtype=np.float32)
    ref[:, 0], ref[:, 1] = 5.0, -5.0  # background, margin 10
    ref[:, :, 8:16, 8:16] = np.array([-5.0, 5.0], dtype=np.float32)[:, None, None]  # a lesion per image
    s = 5.0
    cand = ref + 0.01 * rng.standard_normal(ref.shape).astype(np.float32)
    worst = rng.choice(ref[:, 0].size, size=int(ref[:, 0].size * 2 * (1 - PIXEL_QUANTILE)) + 1, replace=False)
    n_, y_, x_ = np.unravel_index(worst, ref[:, 0].shape)
    cand[n_, 0, y_, x_] += 0.2 * s  # same class, off by a fifth of the range on twice the quantile's share
    a = check_agreement("seg int8", ref, cand, precision="int8")
    assert a.ok and a.checked_abs_diff > 0.15 * s and a.max_abs_diff_allowed == pytest.approx(PIXEL_INT8_REL * s)
    lost = cand.copy()
    lost[:, 1, 8:16, 8:16] = -5.0  # the lesion is gone: background wins by the margin on 6 % of the pixels
    with pytest.raises(LoweringError, match="disagrees"):
        check_agreement("seg int8", ref, lost, precision="int8")
    rows = np.tile(np.array([[5.0, -5.0]], dtype=np.float32), (64, 1))
    off = rows.copy()
    off[0, 0] += 0.2 * s
    assert not check_agreement("cls int8", rows, off, precision="int8", strict=False).ok
