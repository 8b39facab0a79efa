"""ONNX export and the ONNX Runtime (CPU) runner.

Export uses the TorchScript-based exporter (``dynamo=False``): the dynamo exporter fails on
NNCF-quantized models, and the legacy one turns a model stripped with
``nncf.strip(..., strip_format=nncf.StripFormat.NATIVE)`` into standard
QuantizeLinear/DequantizeLinear pairs that ONNX Runtime and TensorRT run as INT8.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .._compat import require
from ..errors import LoweringError
from ._base import (
    as_batch,
    check_model_file,
    check_precision,
    check_threads,
    cleanup_on_error,
    first_line,
    temp_sibling,
)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
PRECISIONS = ("fp32", "fp16", "int8")


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, *, opset: int = 17) -> Path:
    """Write ``model`` as ONNX to ``path`` (input "input", output "logits", dynamic batch).

    The file is written under a temporary name in the same folder, checked with
    ``onnx.checker`` and for non-standard operators, then renamed: a failed export leaves no
    file. Raises LoweringError with one line on any failure.
    """
    onnx = require("onnx", purpose="to export ONNX models")
    path = Path(path)
    example = torch.as_tensor(example, dtype=torch.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path, ".onnx")
    was_training = model.training
    model.eval()
    try:
        with cleanup_on_error(tmp):
            _torch_export(model, example, tmp, opset)
            try:
                onnx.checker.check_model(str(tmp))
            except Exception as exc:  # onnx raises its own ValidationError types
                raise LoweringError(f"ONNX export of {type(model).__name__} is not a valid model: {first_line(exc)}") from exc
            _check_standard_ops(onnx.load(str(tmp), load_external_data=False), type(model).__name__)
            os.replace(tmp, path)
    finally:
        model.train(was_training)
    return path


def _torch_export(model: torch.nn.Module, example: torch.Tensor, tmp: Path, opset: int) -> None:
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)  # "dynamo=False is deprecated"
            torch.onnx.export(
                model, (example,), str(tmp), dynamo=False, opset_version=opset, do_constant_folding=True,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes,
            )
    except LoweringError:
        raise
    except Exception as exc:
        raise LoweringError(f"ONNX export of {type(model).__name__} (opset {opset}) failed: {first_line(exc)}") from exc
    if not tmp.is_file():
        raise LoweringError(f"ONNX export of {type(model).__name__} wrote no file")


def _check_standard_ops(model_proto, name: str) -> None:
    """Fail on custom-domain nodes (e.g. NNCF's FakeQuantize), which ONNX Runtime cannot load."""
    custom = sorted({f"{n.domain}::{n.op_type}" for n in model_proto.graph.node if n.domain not in STANDARD_DOMAINS})
    if custom:
        raise LoweringError(
            f"ONNX export of {name} contains non-standard operators {', '.join(custom)}; "
            f"strip an NNCF model to QuantizeLinear/DequantizeLinear first with "
            f"nncf.strip(model, do_copy=True, strip_format=nncf.StripFormat.NATIVE, example_input=x)"
        )


def count_ops(path: Path) -> dict[str, int]:
    """Number of nodes of each operator type in an ONNX file (e.g. to confirm Q/DQ pairs)."""
    onnx = require("onnx", purpose="to read ONNX models")
    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


class OnnxRuntimeRunner:
    """An ONNX file in ONNX Runtime on the CPU: ``threads`` intra-op threads, one inter-op
    thread, sequential execution, all graph optimizations. ``precision`` is recorded (the
    arithmetic is fixed by the file: QDQ nodes run as INT8)."""

    backend = "onnxruntime"

    def __init__(self, path: Path, threads: int, precision: str = "fp32") -> None:
        ort = require("onnxruntime", extra="onnx", purpose="to run ONNX models")
        self.path: Path | None = check_model_file(path, (".onnx",), self.backend)
        self.threads = check_threads(threads)
        self.precision = check_precision(precision, PRECISIONS, self.backend)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise LoweringError(f"ONNX Runtime cannot load '{self.path}': {first_line(exc)}") from exc
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name
        self.config = {
            "providers": self._session.get_providers(),
            "intra_op_num_threads": self.threads,
            "inter_op_num_threads": 1,
            "execution_mode": "sequential",
            "graph_optimization_level": "all",
            "onnxruntime": ort.__version__,
        }

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._session.run([self._output], {self._input: as_batch(x)})[0]


def export(model: torch.nn.Module, example: torch.Tensor, path: Path, *, opset: int = 17) -> Path:
    """Uniform backend entry point: the model's file for this runtime (see :func:`edgekd.lower.get_backend`)."""
    return export_onnx(model, example, Path(path).with_suffix(".onnx"), opset=opset)


def open_runner(source: Path, *, threads: int, precision: str = "fp32") -> OnnxRuntimeRunner:
    """Uniform backend entry point (see :func:`edgekd.lower.get_backend`)."""
    return OnnxRuntimeRunner(source, threads, precision)
