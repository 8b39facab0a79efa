"""What TensorRT's ONNX parser accepts, checked on the host, and the uint8 → int8 Q/DQ rewrite.

TensorRT cannot run here, so everything knowable from the ONNX file alone is checked before a
bundle goes to a device. The rules come from the onnx-tensorrt operator tables
(``docs/operators.md`` of the 8.2-GA, 8.4-GA, 8.5-GA, 8.6-GA and 10.x branches) and the TensorRT
developer guide, "Explicit Quantization":

- QuantizeLinear / DequantizeLinear: zero point must be 0 ("`y_zero_point` must be 0"), the
  quantized type INT8 (signed, symmetric); activations per tensor, weights per tensor or per
  channel along the output-channel axis (axis 0 for Conv/Gemm weights); opset >= 13 (per-channel
  DequantizeLinear appeared in opset 13).
- Opset: TensorRT 8.2 parses operators up to opset 13, 8.4–8.6 up to 17, 10.0 from 9 to 20.
- HardSwish is parsed from TensorRT 8.4 on; 8.2 (Jetson Nano) needs the opset-13 export, where
  torch writes ``x * HardSigmoid(x)`` instead.

NNCF's PERFORMANCE preset makes every quantizer symmetric, but activations it knows are
non-negative (after ReLU) come out as **uint8** Q/DQ with zero point 0, and inputs of depthwise
convolutions are quantized **per channel** (every NNCF hardware setup allows it). TensorRT takes
neither. :func:`to_tensorrt_qdq` rewrites both into int8 per-tensor Q/DQ with zero point 0 that
covers the same range: scale ``s·255/127`` for uint8 ``[0, 255·s]`` (the positive half of int8 has
128 levels instead of 256: about one bit coarser), the largest channel scale for per-channel
ones. The agreement check after the rewrite measures the cost. Quantizing for TensorRT in the
first place avoids both: ``nncf.AdvancedQuantizationParameters(activations_quantization_params=
QuantizationParameters(per_channel=False, signedness_to_force=True))``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._compat import require
from ..errors import InputError, LoweringError
from ._base import cleanup_on_error, first_line, temp_sibling

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
STANDARD_DOMAINS = ("", "ai.onnx")
MIN_QDQ_OPSET = 13

# ONNX operators that the TensorRT ONNX parser supports (onnx-tensorrt docs/operators.md) and that
# CNN classifiers use, with the first TensorRT release whose parser has them. Deliberately short:
# an operator outside it may still parse, but nobody here has checked, so it is reported.
_SINCE_8_0 = (
    "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "Conv", "DequantizeLinear",
    "Div", "Dropout", "Flatten", "Gather", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "HardSigmoid", "Identity",
    "LeakyRelu", "MatMul", "MaxPool", "Mul", "Pad", "PRelu", "QuantizeLinear", "ReduceMean", "Relu", "Reshape",
    "Shape", "Sigmoid", "Slice", "Softmax", "Squeeze", "Sub", "Tanh", "Transpose", "Unsqueeze",
)
SUPPORTED_OPS: dict[str, tuple[int, int]] = {**{op: (8, 0) for op in _SINCE_8_0}, "HardSwish": (8, 4)}
# Highest ONNX opset each TensorRT release parses (onnx-tensorrt docs/operators.md).
_MAX_OPSET = (((8, 0), 13), ((8, 4), 17), ((10, 0), 20))

_FIX_UINT8 = "rewrite activations to int8 per tensor with edgekd.lower.tensorrt.to_tensorrt_qdq(src, dst)"
_FIX_SYMMETRIC = ("re-quantize with symmetric quantizers "
                  "(nncf.quantize(..., preset=nncf.QuantizationPreset.PERFORMANCE))")
_FIX_REEXPORT = "re-export the NNCF model with nncf.strip(..., strip_format=nncf.StripFormat.NATIVE) and export_onnx"


def parse_version(version: str) -> tuple[int, int]:
    """``"8.2"``, ``"10.3.0"`` or ``"8.2.1.8"`` → (major, minor); anything else is an InputError."""
    m = re.fullmatch(r"\s*(\d+)(?:\.(\d+))?(?:\.\d+)*\s*", str(version))
    if not m:
        raise InputError(f"TensorRT version {version!r} is not a version string like \"8.2\" or \"10.3\"")
    return int(m.group(1)), int(m.group(2) or 0)


def max_opset(tensorrt: str) -> int:
    """The highest ONNX opset TensorRT ``tensorrt`` parses."""
    v = parse_version(tensorrt)
    if v < _MAX_OPSET[0][0]:
        raise InputError(f"TensorRT {tensorrt} is older than 8.0, which edgekd does not support: "
                         f"use JetPack 4.6 or newer")
    return max(opset for since, opset in _MAX_OPSET if v >= since)


def export_opset(tensorrt: str, preferred: int = 17) -> int:
    """The opset to export ONNX at for a device with TensorRT ``tensorrt`` (13 for 8.2, else ``preferred``)."""
    return max(MIN_QDQ_OPSET, min(preferred, max_opset(tensorrt)))


@dataclass
class Inspection:
    """What :func:`inspect_tensorrt_onnx` found; ``problems`` stop TensorRT, ``notes`` do not."""

    problems: list[str] = field(default_factory=list)  # each one line: where, what, why
    fixes: list[str] = field(default_factory=list)  # how to fix, one per kind of problem, in order found
    notes: list[str] = field(default_factory=list)  # allowed but worth knowing (e.g. per-tensor weight scales)
    opset: int = 0  # default-domain opset of the model
    quantize: int = 0  # QuantizeLinear nodes
    dequantize: int = 0  # DequantizeLinear nodes
    uint8: int = 0  # Q/DQ nodes with a uint8 (or absent) zero point
    per_channel_weights: int = 0  # weight Q/DQ nodes with a per-channel scale

    def add(self, problem: str, fix: str) -> None:
        self.problems.append(problem)
        if fix not in self.fixes:
            self.fixes.append(fix)


def load_model(model: Any) -> Any:
    """An ``onnx.ModelProto`` as is, or the one stored at a path (InputError when it is missing)."""
    onnx = require("onnx", purpose="to read ONNX models")
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise InputError(f"ONNX file '{path}' does not exist; export it first")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise InputError(f"'{path}' is not a readable ONNX file: {first_line(exc)}") from exc


def constants(graph: Any) -> dict[str, np.ndarray]:
    """Every constant tensor of ``graph`` by name: initializers, Constant nodes and Identity of those."""
    from onnx import helper, numpy_helper

    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name != "sparse_value":
            attr = node.attribute[0]
            value = helper.get_attribute_value(attr)
            consts[node.output[0]] = numpy_helper.to_array(value) if attr.name == "value" else np.asarray(value)
        elif node.op_type == "Identity" and node.input[0] in consts:
            consts[node.output[0]] = consts[node.input[0]]
    return consts


def model_opset(model: Any) -> int:
    return max((o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS), default=0)


def _where(node: Any) -> str:
    return f"{node.op_type} '{node.name or node.output[0]}'"


def _axis(node: Any) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)  # ONNX default axis is 1


def _consumers(graph: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _weight_nodes(graph: Any, consts: dict[str, np.ndarray]) -> set[str]:
    """Outputs of the Q/DQ nodes that quantize weights: their input is a constant, or a weight Q feeds them."""
    weight_q = {n.output[0] for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in consts}
    return {n.output[0] for n in graph.node
            if n.op_type in QDQ_OPS and (n.input[0] in consts or n.input[0] in weight_q)}


def inspect_tensorrt_onnx(model: Any, *, tensorrt: str | None = None, require_qdq: bool = False) -> Inspection:
    """Check an ONNX model (or file) against what TensorRT's ONNX parser accepts.

    Always: operators (standard domain, in :data:`SUPPORTED_OPS`) and every Q/DQ node's zero
    point, scale and axis. With ``tensorrt`` ("8.2", "10.3"): the opset that release parses and
    operators newer than it. With ``require_qdq``: a model without Q/DQ nodes is a problem.
    """
    model = load_model(model)
    graph = model.graph
    found = Inspection(opset=model_opset(model))
    _check_ops(graph, found, tensorrt)
    has_qdq = any(n.op_type in QDQ_OPS for n in graph.node)
    if require_qdq and not has_qdq:
        found.add("the model has no QuantizeLinear/DequantizeLinear nodes: it is not an INT8 Q/DQ model",
                  "export the NNCF-quantized model (strip_for_export, then export_onnx), not the fp32 one")
    if (has_qdq or require_qdq) and found.opset < MIN_QDQ_OPSET:
        found.add(f"opset {found.opset}: TensorRT explicit quantization needs opset >= {MIN_QDQ_OPSET}",
                  f"re-export with opset {MIN_QDQ_OPSET} or newer (export_onnx(..., opset=17))")
    if tensorrt is not None and found.opset > max_opset(tensorrt):
        found.add(f"opset {found.opset}: TensorRT {tensorrt} parses operators up to opset {max_opset(tensorrt)}",
                  f"re-export with opset {export_opset(tensorrt)} (export_onnx(..., opset=export_opset('{tensorrt}')))")
    if has_qdq:
        _check_qdq(graph, found)
    return found


def _check_ops(graph: Any, found: Inspection, tensorrt: str | None) -> None:
    version = parse_version(tensorrt) if tensorrt is not None else None
    for node in graph.node:
        if node.domain not in STANDARD_DOMAINS:
            found.add(f"{_where(node)} is a custom operator ({node.domain}), which TensorRT cannot parse",
                      _FIX_REEXPORT)
        elif node.op_type not in SUPPORTED_OPS:
            found.add(f"{_where(node)} is not among the ONNX operators edgekd knows TensorRT's parser supports",
                      "replace the layer with a supported one (see edgekd.lower.tensorrt.SUPPORTED_OPS)")
        elif version is not None and version < SUPPORTED_OPS[node.op_type]:
            since = ".".join(map(str, SUPPORTED_OPS[node.op_type]))
            found.add(f"{_where(node)} needs TensorRT >= {since}, the device has {tensorrt}",
                      f"re-export with opset {export_opset(tensorrt)} (torch writes HardSwish as x*HardSigmoid(x))")


def _check_qdq(graph: Any, found: Inspection) -> None:
    consts = constants(graph)
    weights = _weight_nodes(graph, consts)
    consumers = _consumers(graph)
    q_outputs = {n.output[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    outputs = {o.name for o in graph.output}
    for node in graph.node:
        if node.op_type not in QDQ_OPS:
            continue
        if node.op_type == "QuantizeLinear":
            found.quantize += 1
            users = consumers.get(node.output[0], [])
            if node.output[0] in outputs or not users or any(u.op_type != "DequantizeLinear" for u in users):
                found.add(f"{_where(node)} is not followed by DequantizeLinear: TensorRT needs Q/DQ pairs",
                          _FIX_REEXPORT)
        else:
            found.dequantize += 1
            if node.input[0] not in consts and node.input[0] not in q_outputs:
                found.add(f"{_where(node)} is fed neither by a QuantizeLinear nor by a constant", _FIX_REEXPORT)
        _check_zero_point(node, consts, found)
        _check_scale(node, consts, node.output[0] in weights, found)


def _check_zero_point(node: Any, consts: dict[str, np.ndarray], found: Inspection) -> None:
    name = node.input[2] if len(node.input) > 2 else ""
    if not name:
        found.uint8 += 1
        found.add(f"{_where(node)} has no zero point, which ONNX reads as uint8: TensorRT needs an int8 zero point 0",
                  _FIX_UINT8)
        return
    if name not in consts:
        found.add(f"{_where(node)}: zero point '{name}' is not a constant", _FIX_REEXPORT)
        return
    zp = consts[name]
    if zp.dtype == np.uint8:
        found.uint8 += 1
        found.add(f"{_where(node)} is uint8 (unsigned, asymmetric range [0, 255]): "
                  f"TensorRT needs signed int8 with zero point 0", _FIX_UINT8 if not zp.any() else _FIX_SYMMETRIC)
    elif zp.dtype != np.int8:
        found.add(f"{_where(node)} quantizes to {zp.dtype}: TensorRT's INT8 Q/DQ needs int8", _FIX_SYMMETRIC)
    if zp.any():
        bad = zp[zp != 0].ravel()[:3].tolist()
        found.add(f"{_where(node)} has zero point {bad[0] if len(bad) == 1 else bad} (asymmetric quantization): "
                  f"TensorRT needs zero point 0", _FIX_SYMMETRIC)


def _check_scale(node: Any, consts: dict[str, np.ndarray], is_weight: bool, found: Inspection) -> None:
    name = node.input[1]
    if name not in consts:
        found.add(f"{_where(node)}: scale '{name}' is not a constant", _FIX_REEXPORT)
        return
    scale = consts[name]
    if not np.issubdtype(scale.dtype, np.floating) or not np.isfinite(scale).all() or (scale <= 0).any():
        found.add(f"{_where(node)}: scales must be positive and finite, got min {scale.min()!r}",
                  "re-calibrate the quantized model (a zero or NaN scale means a dead or broken activation range)")
    if scale.size <= 1:
        if is_weight and node.op_type == "DequantizeLinear":
            found.notes.append(f"{_where(node)} quantizes weights per tensor (allowed; per channel is more accurate)")
        return
    if not is_weight:
        found.add(f"{_where(node)} has a per-channel scale on an activation: TensorRT quantizes activations per tensor",
                  _FIX_UINT8)
        return
    axis = _axis(node)
    if axis != 0:
        found.add(f"{_where(node)} quantizes weights per channel along axis {axis}: TensorRT needs axis 0 "
                  f"(output channels)", "quantize weights per output channel (NNCF's default for Conv/Linear)")
    elif node.op_type == "DequantizeLinear":
        found.per_channel_weights += 1


def tensorrt_qdq_problems(model: Any) -> list[str]:
    """Why TensorRT's explicit quantization would reject this INT8 Q/DQ model (empty: nothing found).

    ``model`` is an ``onnx.ModelProto`` or a path. Operator and Q/DQ checks only; the opset a
    given TensorRT release parses is checked by :func:`tensorrt_onnx_problems`.
    """
    return inspect_tensorrt_onnx(model, require_qdq=True).problems


def tensorrt_onnx_problems(model: Any, tensorrt: str) -> list[str]:
    """Why TensorRT ``tensorrt`` would not parse this ONNX model (fp32 or Q/DQ); empty: nothing found."""
    return inspect_tensorrt_onnx(model, tensorrt=tensorrt).problems


def _raise(found: Inspection, path: Path, what: str) -> None:
    if found.problems:
        more = f" (and {len(found.problems) - 3} more)" if len(found.problems) > 3 else ""
        raise LoweringError(f"{path} is not {what}: {'; '.join(found.problems[:3])}{more}; "
                            f"fix: {'; '.join(found.fixes[:2])}")


def check_tensorrt_qdq(path: Path, tensorrt: str | None = None) -> None:
    """Raise LoweringError (first problems and the fix, one line) unless TensorRT can build INT8 from ``path``."""
    _raise(inspect_tensorrt_onnx(path, tensorrt=tensorrt, require_qdq=True), Path(path),
           "an INT8 Q/DQ model TensorRT accepts")


def check_tensorrt_onnx(path: Path, tensorrt: str) -> None:
    """Raise LoweringError unless TensorRT ``tensorrt``'s ONNX parser can read ``path``."""
    _raise(inspect_tensorrt_onnx(path, tensorrt=tensorrt), Path(path), f"an ONNX model TensorRT {tensorrt} parses")


def to_tensorrt_qdq(src: Path, dst: Path) -> Path:
    """Write ``src`` with its activation Q/DQ pairs made what TensorRT accepts (int8, per tensor) to ``dst``.

    Each activation QuantizeLinear with zero point 0 that is uint8 (or has no zero point) or per
    channel, and the DequantizeLinear nodes it feeds, get one int8 scale that covers the same
    range: ``s·255/127`` for uint8 ``[0, 255·s]``, the largest channel scale for per-channel ones,
    and an int8 zero point 0. Weight Q/DQ (int8, per channel, axis 0) is left alone. Problems the
    rewrite cannot fix (asymmetric zero points, unsupported operators, opset < 13) raise
    LoweringError and write nothing; afterwards ``tensorrt_qdq_problems(dst) == []``. Written
    under a temporary name, then renamed.
    """
    onnx = require("onnx", purpose="to rewrite ONNX models")
    src, dst = Path(src), Path(dst)
    model = load_model(src)
    detached = _rewrite_activation_pairs(model.graph)
    _drop_unused_constants(model.graph, detached)
    found = inspect_tensorrt_onnx(model, require_qdq=True)
    _raise(found, src, "an INT8 Q/DQ model that rewriting its activation quantizers makes TensorRT-ready")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise LoweringError(f"rewriting {src} for TensorRT gave an invalid ONNX model: {first_line(exc)}") from exc
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dst, ".onnx")
    with cleanup_on_error(tmp):
        onnx.save(model, str(tmp))
        os.replace(tmp, dst)
    return dst


def _zero_point(node: Any, consts: dict[str, np.ndarray]) -> np.ndarray | None:
    """The node's zero point: absent means uint8 0 in ONNX; None when it is not a constant."""
    if len(node.input) < 3 or not node.input[2]:
        return np.zeros((), np.uint8)
    return consts.get(node.input[2])


def _needs_rewrite(zp: np.ndarray | None, scale: np.ndarray | None) -> bool:
    """A symmetric (zero point 0) activation quantizer that is uint8 or per channel: rewritable."""
    if zp is None or scale is None or zp.any() or zp.dtype not in (np.uint8, np.int8):
        return False
    return zp.dtype == np.uint8 or scale.size > 1


def _rewrite_activation_pairs(graph: Any) -> set[str]:
    """Make activation Q → DQ pairs int8 per tensor, in place; returns the constant names they no longer use.

    uint8 (zero point 0) covers [0, 255·s]: int8 with scale 255·s/127 covers the same range.
    Per-channel activation scales (NNCF quantizes depthwise-conv inputs per channel) become the
    largest channel scale, so every channel keeps its range; small channels lose resolution.
    """
    from onnx import TensorProto, numpy_helper

    consts, users = constants(graph), _consumers(graph)
    outputs = {o.name for o in graph.output}
    taken = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    value_info = {v.name: v for v in graph.value_info}
    detached: set[str] = set()
    for q in [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in consts]:
        scale, zp = consts.get(q.input[1]), _zero_point(q, consts)
        dqs = users.get(q.output[0], [])
        if not _needs_rewrite(zp, scale) or not dqs or q.output[0] in outputs:
            continue
        if any(d.op_type != "DequantizeLinear" or d.input[1] not in consts or _zero_point(d, consts) is None
               or not np.array_equal(consts[d.input[1]], scale) or not np.array_equal(_zero_point(d, consts), zp)
               or _axis(d) != _axis(q) for d in dqs):
            continue  # not a plain pair: left for the check to report
        base = _unique(f"{q.name or q.output[0]}_trt", taken)
        factor = 255.0 / 127.0 if zp.dtype == np.uint8 else 1.0
        new_scale = np.asarray(scale.astype(np.float64).max() * factor, dtype=scale.dtype)
        graph.initializer.extend([numpy_helper.from_array(new_scale, f"{base}_scale"),
                                  numpy_helper.from_array(np.zeros((), np.int8), f"{base}_zero_point")])
        for node in (q, *dqs):
            detached.update(name for name in node.input[1:3] if name)
            del node.input[1:]
            node.input.extend([f"{base}_scale", f"{base}_zero_point"])
            for attr in [a for a in node.attribute if a.name == "axis"]:
                node.attribute.remove(attr)  # per tensor now
        if q.output[0] in value_info:
            value_info[q.output[0]].type.tensor_type.elem_type = TensorProto.INT8
    return detached


def _unique(name: str, taken: set[str]) -> str:
    out, i = name, 1
    while f"{out}_scale" in taken or f"{out}_zero_point" in taken:
        out, i = f"{name}{i}", i + 1
    taken.update({f"{out}_scale", f"{out}_zero_point"})
    return out


def _drop_unused_constants(graph: Any, names: set[str]) -> None:
    """Remove the initializers / Constant (and Identity-of-constant) nodes among ``names`` nothing reads."""
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = {n for n in names if n not in used}
        nodes = [n for n in graph.node if n.op_type in ("Constant", "Identity") and n.output[0] in dead]
        inits = [i for i in graph.initializer if i.name in dead]
        if not nodes and not inits:
            return
        for n in nodes:
            names.update(n.input)  # an Identity's source may now be unused too
            graph.node.remove(n)
        for i in inits:
            graph.initializer.remove(i)
        for v in [v for v in graph.input if v.name in dead]:  # IR < 4 lists initializers as inputs too
            graph.input.remove(v)
        names -= dead
