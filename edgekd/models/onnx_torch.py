"""A torch module from a teacher that is not one: ONNX through onnx2torch, TorchScript and torch.export via ONNX.

Private helper of :mod:`edgekd.prune.derived`. Torch-Pruning needs real ``nn.Conv2d`` /
``nn.Linear`` modules with forward hooks: a ``ScriptModule`` refuses hooks, and the GraphModule of
a ``torch.export`` program holds ``aten.conv2d`` calls, not conv modules (Torch-Pruning finds
nothing to prune in it). ONNX is the common ground: onnx2torch turns an ONNX graph into a
``torch.fx.GraphModule`` of ordinary layers, which Torch-Pruning prunes and autograd trains.

onnx2torch 1.5.15 trips over three things current exporters write, fixed here on the ONNX graph
before converting (each rewrite leaves the model's outputs unchanged):

- ``Identity`` nodes in front of initializers (torch's exporter shares weights that way): inlined;
- opsets above 17 (``ReduceMean``-18, ``Identity``-19 have no converter): down-converted to 17;
- ``Reshape`` to a constant 2-D shape that flattens each image (the dynamo exporter's flatten
  before the classifier, with the batch and the width baked in): ``Flatten(axis=1)``, so
  the converted model takes any batch and its flatten follows pruned channel counts.

Batch norms are folded into the convolutions by the exporters, so a converted student has no
BatchNorm layers (it trains, but without them).

Some onnx2torch layers (global average pool, reshape, gather, …) write their ONNX op through a
custom ``autograd.Function`` while an export runs. Under NNCF's quantizer hooks that path fails
(``RuntimeError: unordered_map::at``), so :func:`onnx_to_torch` wraps each such layer in
:class:`_TorchOps`, which runs it on its plain torch path in every mode: the exported graph then
holds the torch ops (``ReduceMean`` for ``GlobalAveragePool``), the same numbers either way.
"""
from __future__ import annotations

import io
import warnings
from typing import Any

import torch

from .._compat import import_timm, require

ONNX2TORCH_OPSET = 17  # highest opset whose every common op onnx2torch 1.5.15 converts


def onnx_to_torch(model: Any) -> torch.nn.Module:
    """A train-mode ``GraphModule`` from an ``onnx.ModelProto`` (the proto is rewritten in place)."""
    import_timm()  # onnx2torch imports torchvision: the CPU shim must come first
    onnx2torch = require("onnx2torch", purpose="to derive a student from an ONNX, TorchScript or torch.export teacher")
    _inline_identities(model)
    _constant_flattens(model)
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), ONNX2TORCH_OPSET)
    if version > ONNX2TORCH_OPSET:
        from onnx import version_converter

        model = version_converter.convert_version(model, ONNX2TORCH_OPSET)
    module = onnx2torch.convert(model)
    _plain_torch_paths(module)
    return module.train()


class _TorchOps(torch.nn.Module):
    """Runs an onnx2torch layer on its torch path even inside ``torch.onnx.export`` (see module doc)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        exporting = torch.onnx.is_in_onnx_export
        torch.onnx.is_in_onnx_export = _never  # onnx2torch layers read it at call time
        try:
            return self.inner(*args, **kwargs)
        finally:
            torch.onnx.is_in_onnx_export = exporting


def _never() -> bool:
    return False


def _plain_torch_paths(module: torch.nn.Module) -> None:
    from onnx2torch.utils.custom_export_to_onnx import OnnxToTorchModuleWithCustomExport

    targets = [name for name, m in module.named_modules() if isinstance(m, OnnxToTorchModuleWithCustomExport)]
    for name in targets:
        parent_name, _, leaf = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, leaf, _TorchOps(getattr(parent, leaf)))


def torch_to_onnx(module: Any, example: torch.Tensor, *, exported: bool) -> Any:
    """An ``onnx.ModelProto`` of a TorchScript module (legacy exporter) or an ExportedProgram (dynamo)."""
    onnx = require("onnx", purpose="to convert the teacher")
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exported:
            prog = torch.onnx.export(module, (example,), dynamo=True, opset_version=18, verbose=False)
            return prog.model_proto
        torch.onnx.export(module, (example,), buf, dynamo=False, opset_version=ONNX2TORCH_OPSET,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    return onnx.load_from_string(buf.getvalue())


def _inline_identities(model: Any) -> None:
    graph = model.graph
    outputs = {o.name for o in graph.output}
    alias: dict[str, str] = {}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            alias[node.output[0]] = node.input[0]
        else:
            keep.append(node)
    if not alias:
        return

    def root(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    for node in keep:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = root(name)
    del graph.node[:]
    graph.node.extend(keep)


def _constant_flattens(model: Any) -> None:
    from onnx import helper, numpy_helper, shape_inference

    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(a.t)
    reshapes = [n for n in graph.node if n.op_type == "Reshape" and n.input[1] in consts
                and consts[n.input[1]].ndim == 1 and consts[n.input[1]].shape[0] == 2]
    if not reshapes:
        return
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - no shapes: leave the graph as it is
        return
    dims = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            dims[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    for node in reshapes:
        shape = [int(v) for v in consts[node.input[1]]]
        src = dims.get(node.input[0])
        if not src or len(src) < 2 or any(d is None for d in src[1:]):
            continue
        rest = 1
        for d in src[1:]:
            rest *= d
        if shape[1] != rest or shape[0] not in (-1, src[0]):  # not a flatten of the batch's images
            continue
        flat = helper.make_node("Flatten", [node.input[0]], list(node.output), name=node.name + "_flatten", axis=1)
        node.CopyFrom(flat)
