"""Candidates made of files: the teacher's deployable baselines and the lowered students.

Each function writes model files into the folder it is given (a stage-cache entry, see
:mod:`edgekd.pipeline`) and checks every file numerically against the model it came from
(agreement of predictions and max |Δlogit|; a mismatch is a LoweringError).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from ._io import size_on_disk
from .bench.candidates import Candidate
from .config import CompressConfig

if TYPE_CHECKING:
    from .api import Inputs

Log = Callable[[str], None]


def teacher_torch_candidate(inp: Inputs) -> Candidate | None:
    """The torch fp32 teacher (when the teacher is a torch model): the baseline every speed-up is against."""
    t = inp.teacher
    if t.module is None:
        return None
    from .lower.torch import TorchRunner
    from .models import count_macs, count_params

    tsize = size_on_disk(t.path) if t.path is not None and Path(t.path).is_file() else None
    return Candidate("teacher-torch-fp32", "teacher", "torch", "fp32", "baseline", TorchRunner(t.module, inp.threads),
                     t.path, tsize, count_params(t.module), count_macs(t.module, inp.example))


def teacher_baselines(inp: Inputs, folder: Path, cfg: CompressConfig, log: Log,
                      torch_teacher: Candidate | None) -> list[Candidate]:
    """The teacher's files as a user would deploy it without edgekd: ORT/OpenVINO fp32, OpenVINO INT8 PTQ.

    Files are written into ``folder``; an ONNX teacher is used as it is. A torch teacher's ONNX
    export is checked against ``torch_teacher``.
    """
    from .lower import get_backend
    from .lower._base import predict_batched
    from .lower.validate import check_agreement
    from .quantize import calibration_subset

    t, cands = inp.teacher, []
    onnx_be, ov_be = get_backend("onnxruntime"), get_backend("openvino")
    params, macs = (torch_teacher.params, torch_teacher.macs) if torch_teacher else (None, None)
    onnx_path = t.onnx_path
    if onnx_path is None:
        onnx_path = onnx_be.export_onnx(t.module, inp.example, folder / "teacher-fp32.onnx")
    check_x = inp.data.test.images.numpy()[:256]
    ort = onnx_be.OnnxRuntimeRunner(onnx_path, inp.threads, "fp32")
    c = Candidate("teacher-onnxruntime-fp32", "teacher", "onnxruntime", "fp32", "baseline", ort,
                  onnx_path, size_on_disk(onnx_path), params, macs, source=torch_teacher.name if torch_teacher else None)
    if torch_teacher:  # a torch teacher: its ONNX export must match it
        c.agreement = check_agreement(c.name, predict_batched(torch_teacher.runner, check_x),
                                      predict_batched(ort, check_x), precision="fp32")
    cands.append(c)
    ov_xml = ov_be.export_openvino(onnx_path, inp.example, folder / "teacher-fp32.xml")
    cands.append(Candidate("teacher-openvino-fp32", "teacher", "openvino", "fp32", "baseline",
                           ov_be.OpenVINORunner(ov_xml, inp.threads, "fp32"), ov_xml, size_on_disk(ov_xml),
                           params, macs, source="teacher-onnxruntime-fp32"))
    calib = calibration_subset(inp.data.train, cfg.quant.calibration_samples, cfg.seed).numpy()
    log(f"baseline: OpenVINO INT8 post-training quantization of the teacher ({len(calib)} calibration images)")
    int8_xml = ov_be.quantize_openvino_ptq(onnx_path, calib, folder / "teacher-int8.xml", subset_size=len(calib))
    int8 = Candidate("teacher-openvino-int8", "teacher", "openvino", "int8", "baseline",
                     ov_be.OpenVINORunner(int8_xml, inp.threads, "int8"), int8_xml, size_on_disk(int8_xml),
                     params, macs, source="teacher-onnxruntime-fp32")
    # PTQ is the user's "without edgekd" baseline, not edgekd's output: report its agreement, never fail on it
    int8.agreement = check_agreement(int8.name, predict_batched(ort, check_x), predict_batched(int8.runner, check_x),
                                     precision="int8", strict=False)
    cands.append(int8)
    return cands


def lower_student(model: torch.nn.Module, source: Candidate, precision: str, inp: Inputs, folder: Path,
                  opset: int = 17) -> list[Candidate]:
    """Lower one torch student to each CPU runtime (files in ``folder``), checking every file against ``model``."""
    from .lower import get_backend
    from .lower.validate import check_agreement

    from .lower._base import predict_batched

    check_x = inp.data.test.images.numpy()[:512]
    ref = predict_batched(source.runner, check_x)
    stem = f"student-{precision}"
    onnx_be, ov_be = get_backend("onnxruntime"), get_backend("openvino")
    export_model = model
    if precision == "int8":
        from .quantize import strip_for_export

        export_model = strip_for_export(model, inp.example)
    onnx_path = onnx_be.export_onnx(export_model, inp.example, folder / f"{stem}.onnx", opset=opset)
    ort = onnx_be.OnnxRuntimeRunner(onnx_path, inp.threads, precision)
    cands = [Candidate(f"{stem}-onnxruntime", "lower", "onnxruntime", precision, "student", ort, onnx_path,
                       size_on_disk(onnx_path), source.params, source.macs, source=source.name)]
    ov_source = onnx_path if precision == "int8" else model
    ov_xml = ov_be.export_openvino(ov_source, inp.example, folder / f"{stem}.xml")
    cands.append(Candidate(f"{stem}-openvino", "lower", "openvino", precision, "student",
                           ov_be.OpenVINORunner(ov_xml, inp.threads, precision), ov_xml, size_on_disk(ov_xml),
                           source.params, source.macs, source=source.name))
    for c in cands:
        c.agreement = check_agreement(c.name, ref, predict_batched(c.runner, check_x), precision=precision)
    return cands


def lower_for_tensorrt(inp: Inputs, lowered: list[Candidate], work: Path) -> list[Candidate]:
    """Candidates for a TensorRT target: the ONNX files the device builds its engine from.

    TensorRT cannot run on the host, so each candidate's accuracy is measured with ONNX Runtime on
    exactly the ONNX file the engine is built from (fp32 ONNX for FP16/FP32 engines; the INT8 Q/DQ
    ONNX rewritten for TensorRT's explicit quantization for INT8 engines); its latency comes from
    the device runner (``edgekd report --merge``).
    """
    from .lower import get_backend
    from .lower._base import predict_batched
    from .lower.tensorrt import check_tensorrt_onnx, check_tensorrt_qdq, to_tensorrt_qdq
    from .lower.validate import check_agreement

    profile = inp.profile
    by = {c.backend + "-" + c.precision: c for c in lowered}
    onnx_be = get_backend("onnxruntime")
    out = []
    for prec in profile.precisions:
        note = (f"engine built on the device (TensorRT {profile.tensorrt}, {prec.upper()}); host figures are "
                "ONNX Runtime on the same ONNX file; latency comes from the device runner")
        if prec in ("fp16", "fp32") and "onnxruntime-fp32" in by:
            src = by["onnxruntime-fp32"]
            check_tensorrt_onnx(src.path, profile.tensorrt)  # opset and ops the device's parser reads
            out.append(Candidate(f"student-{prec}-tensorrt", "lower", "tensorrt", prec, "student", src.runner,
                                 src.path, src.size_bytes, src.params, src.macs, agreement=src.agreement,
                                 source=src.source, timed=False, notes=[note]))
        elif prec == "int8" and "onnxruntime-int8" in by:
            src = by["onnxruntime-int8"]
            path = to_tensorrt_qdq(src.path, work / "models" / "student-int8-tensorrt.onnx")
            check_tensorrt_qdq(path, profile.tensorrt)
            runner = onnx_be.OnnxRuntimeRunner(path, inp.threads, "int8")
            x = inp.data.test.images.numpy()[:512]
            agreement = check_agreement("student-int8-tensorrt", predict_batched(src.runner, x),
                                        predict_batched(runner, x), precision="int8")
            out.append(Candidate("student-int8-tensorrt", "lower", "tensorrt", "int8", "student", runner, path,
                                 size_on_disk(path), src.params, src.macs, agreement=agreement,
                                 source=src.name, timed=False,
                                 notes=[note, "uint8 activation Q/DQ rewritten to symmetric int8 for TensorRT"]))
    return out
