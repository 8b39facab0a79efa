"""The lower stages: ONNX and OpenVINO files of the fp32 and the INT8 student, and the TensorRT recipe.

Every file is checked numerically against the torch model it came from (agreement of
predictions and max |Δlogit|; a mismatch is a LoweringError).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .._io import size_on_disk
from ..measure.candidates import Candidate
from .run import Run, records
from .stage import Stage


class LowerStage(Stage):
    """ONNX Runtime and OpenVINO files of the fp32 student (``lower-fp32``) or the INT8 one (``lower-int8``)."""

    def __init__(self, precision: str) -> None:
        self.precision = precision
        self.name = f"lower-{precision}"

    def _source(self, run: Run) -> tuple[torch.nn.Module | None, Candidate | None, str]:
        if self.precision == "int8":
            return run.quantized, run.quantized_candidate, run.keys.get("quantize", "")
        return run.student, run.student_candidate, run.student_key

    def skip(self, run: Run) -> str | None:
        if self.precision == "int8" and run.quantized is None:
            return "no INT8 student"
        return None

    def announce(self, run: Run) -> str:
        return f"ONNX and OpenVINO {self.precision}, each checked against its torch source"

    def summary(self, run: Run) -> str:
        return f"ONNX + OpenVINO {self.precision}"

    def key(self, run: Run) -> str:
        return run.store.key(self.name, self._source(run)[2], run.opset)

    def produce(self, run: Run, folder: Path) -> dict:
        model, source, _ = self._source(run)
        return records(lower_student(run, model, source, self.precision, folder), folder)

    def load(self, run: Run, entry) -> None:
        cands = run.file_candidates(entry, "models")
        run.lowered += cands
        run.candidates += cands


class TensorRTStage(Stage):
    """For a TensorRT target: the ONNX files the device builds its engines from (never cached: cheap)."""

    name = "lower-tensorrt"

    def skip(self, run: Run) -> str | None:
        from ..lower import backend_info

        runtime = run.inp.profile.runtime
        return None if backend_info(runtime).device_built else f"target runtime {runtime} runs on the host"

    def announce(self, run: Run) -> str:
        p = run.inp.profile
        return f"engine recipe for TensorRT {p.tensorrt} ({', '.join(p.precisions)}), built on the device"

    def execute(self, run: Run) -> None:
        run.candidates += lower_for_tensorrt(run, run.lowered, run.work)


def lower_student(run: Run, model: torch.nn.Module, source: Candidate, precision: str, folder: Path
                  ) -> list[Candidate]:
    """Lower one torch student to each CPU runtime (files in ``folder``), checking every file against ``model``."""
    from ..lower import get_backend
    from ..lower._base import predict_batched
    from ..lower.validate import check_agreement
    from ..lowrank import layer_count

    inp = run.inp
    check_x = inp.data.test.images.numpy()[:512]
    ref = predict_batched(source.runner, check_x)
    stem = f"student-{precision}"
    onnx_be, ov_be = get_backend("onnxruntime"), get_backend("openvino")
    export_model = model
    if precision == "int8":
        from ..quantize import strip_for_export

        export_model = strip_for_export(model, inp.example)
    onnx_path = onnx_be.export_onnx(export_model, inp.example, folder / f"{stem}.onnx", opset=run.opset)
    ort = onnx_be.OnnxRuntimeRunner(onnx_path, inp.threads, precision)
    cands = [Candidate(f"{stem}-onnxruntime", "lower", "onnxruntime", precision, "student", ort, onnx_path,
                       size_on_disk(onnx_path), source.params, source.macs, source=source.name)]
    ov_source = onnx_path if precision == "int8" else model
    ov_xml = ov_be.export_openvino(ov_source, inp.example, folder / f"{stem}.xml")
    cands.append(Candidate(f"{stem}-openvino", "lower", "openvino", precision, "student",
                           ov_be.OpenVINORunner(ov_xml, inp.threads, precision), ov_xml, size_on_disk(ov_xml),
                           source.params, source.macs, source=source.name))
    layers = layer_count(model)
    for c in cands:
        c.agreement = check_agreement(c.name, ref, predict_batched(c.runner, check_x), precision=precision)
        c.layers = layers
    return cands


def lower_for_tensorrt(run: Run, lowered: list[Candidate], work: Path) -> list[Candidate]:
    """Candidates for a TensorRT target: the ONNX files the device builds its engine from.

    TensorRT cannot run on the host, so each candidate's accuracy is measured with ONNX Runtime on
    exactly the ONNX file the engine is built from (fp32 ONNX for FP16/FP32 engines; the INT8 Q/DQ
    ONNX rewritten for TensorRT's explicit quantization for INT8 engines); its latency comes from
    the device runner (``edgekd report --merge``).
    """
    from ..lower import get_backend
    from ..lower._base import predict_batched
    from ..lower.tensorrt import (
        check_tensorrt_onnx,
        check_tensorrt_qdq,
        to_tensorrt_qdq,
    )
    from ..lower.validate import check_agreement

    inp = run.inp
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
                                 source=src.source, timed=False, notes=[note], layers=src.layers))
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
                                 source=src.name, timed=False, layers=src.layers,
                                 notes=[note, "uint8 activation Q/DQ rewritten to symmetric int8 for TensorRT"]))
    return out
