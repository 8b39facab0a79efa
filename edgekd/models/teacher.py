"""Load the user's trained classifier (the teacher) from whatever format it was saved in.

The teacher is only ever run forward: its logits label the data for distillation and give the
accuracy the compressed student must stay close to. Formats, told apart by the file's content
(not only its suffix):

==============  =======================================================================
format          what is accepted
==============  =======================================================================
"timm"          ``timm:<arch>`` plus a weights file (state_dict ``.pt``/``.pth`` or ``.safetensors``)
"onnx"          an ONNX classifier: one N×C×H×W float input, one N×classes output
"torchscript"   ``torch.jit.save`` / ``torch.jit.trace(...).save`` archives
"torch.export"  ``torch.export.save`` programs (``.pt2``)
"pickle"        a pickled full ``nn.Module`` (only with ``trust_checkpoint``: unpickling runs code)
==============  =======================================================================

Every failure is a :class:`~edgekd.errors.TeacherError` with one line that says what to do.
"""
from __future__ import annotations

import copy
import io
import logging
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._compat import import_timm, require
from .._device import device_of, to_device
from .._io import sha256_file
from .._limits import check_model_size
from .._progress import track
from ..errors import TeacherError, did_you_mean
from ._checkpoint import (
    first_line,
    match_state_dict,
    needs_unpickling,
    no_architecture_message,
    refused_global,
    read_state_dict,
    sniff_format,
)

_ONNX_THREADS = max(1, min(4, os.cpu_count() or 1))  # fixed, small: the teacher shares the CPU
_PROGRESS_MIN_IMAGES = 1024  # show a bar only when labelling takes a while


@dataclass
class Teacher:
    """A loaded teacher, ready to compute logits on preprocessed N×C×H×W float32 images."""

    format: str  # "onnx" | "torchscript" | "torch.export" | "timm" | "pickle" | "smp" (segmentation)
    path: Path | None  # the file given (the weights file for timm)
    spec: str  # what the user passed ("model.onnx", "timm:resnet18")
    sha256: str | None  # of the file (weights file for timm)
    module: torch.nn.Module | None  # torch-callable model in eval mode (None for ONNX)
    onnx_path: Path | None = None  # set for ONNX teachers (baselines reuse the file)
    input_shape: tuple[int | None, ...] | None = None  # declared N,C,H,W (None: dynamic/unknown)
    _session: Any = field(default=None, repr=False, compare=False)  # onnxruntime session
    # --device: a copy of ``module`` on the training device that logits() runs (None: ``module``, on the CPU).
    # ``module`` itself stays on the CPU: it is exported, lowered and timed as the baseline.
    _on_device: Any = field(default=None, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        """Where :meth:`logits` runs (ONNX teachers: ONNX Runtime on the CPU)."""
        return device_of(self._on_device) if self._on_device is not None else torch.device("cpu")

    @property
    def live_module(self) -> torch.nn.Module | None:
        """The torch module :meth:`logits` runs: on the training device after :meth:`run_on`, else ``module``."""
        return self._on_device if self._on_device is not None else self.module

    def run_on(self, device: torch.device, example: torch.Tensor) -> str | None:
        """Run later forward passes on ``device`` (a copy of the module there); None, or why it stays on the CPU.

        ONNX teachers stay on ONNX Runtime's CPU provider. A torch teacher that does not run on the
        device (a TorchScript or torch.export graph with the CPU baked in) stays on the CPU too.
        """
        device = torch.device(device)
        self._on_device = None
        if device.type == "cpu":
            return None
        if self.module is None:
            return "an ONNX teacher runs on ONNX Runtime's CPU provider"
        try:
            moved = copy.deepcopy(self.module).to(device).eval()
            probe = example[:1].repeat(self.fixed_batch or 2, 1, 1, 1).to(device)  # 1×C×H×W from the data
            with torch.inference_mode():
                moved(probe)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the teacher on the CPU, said in one line
            return f"the {self.format} teacher does not run on {device} ({type(exc).__name__}: {str(exc)[:100]})"
        self._on_device = moved
        return None

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the teacher was exported with, when it cannot take any other."""
        return self.input_shape[0] if self.input_shape else None

    def logits(self, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        """Float32 N×num_classes logits, computed without grad in batches.

        ``images``: a tensor, or a train split read from disk (:class:`edgekd.data.lazy.LazyRows`): each
        batch is taken (and converted) on its own, so the whole set is never held at once.
        """
        n = int(images.shape[0])
        bs = self.fixed_batch or max(1, batch_size)
        starts = range(0, n, bs)
        if n >= _PROGRESS_MIN_IMAGES:
            starts = track(starts, "teacher logits", total=len(starts))
        outs = [self._forward_padded(images[s : s + bs].detach().to(torch.float32).contiguous(), bs) for s in starts]
        if not outs:
            return torch.empty(0, 0, dtype=torch.float32)
        return torch.cat(outs).to(torch.float32)

    def _forward_padded(self, x: torch.Tensor, bs: int) -> torch.Tensor:
        """One batch; a short last batch is zero-padded when the teacher has a fixed batch size."""
        k = int(x.shape[0])
        if self.fixed_batch and k < bs:
            x = torch.cat([x, x.new_zeros((bs - k, *x.shape[1:]))])
        return self._forward(x)[:k]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._session is not None:
            name = self._session.get_inputs()[0].name
            return torch.from_numpy(self._session.run(None, {name: x.numpy()})[0])
        if self.module is None:
            raise TeacherError(f"teacher {self.spec} has no runnable model (internal: no module or session)")
        on_device = self._on_device is not None  # --device: a copy on the training device, float32 (no autocast)
        with torch.inference_mode():
            out = self._on_device(to_device(x, self.device)) if on_device else self.module(x)
        if isinstance(out, (tuple, list)) and len(out) == 1:
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise TeacherError(
                f"teacher {self.spec} is not a classifier: it returns {type(out).__name__}, expected one "
                "N×classes logits tensor; export the model with a single logits output"
            )
        return out.detach().cpu() if on_device else out.detach().clone()  # CPU logits either way

    def check(self, channels: int, num_classes: int, image_size: tuple[int, int]) -> None:
        """Fail early, with the fix, when the teacher does not fit the data's shape."""
        h, w = int(image_size[0]), int(image_size[1])
        if self.input_shape:
            _check_static_input(self.input_shape, channels, (h, w), self.spec)
        try:
            out = self.logits(torch.zeros(2, channels, h, w))
        except TeacherError:
            raise
        except Exception as exc:  # noqa: BLE001 - any backend failure becomes one actionable line
            raise TeacherError(_explain_forward_error(exc, self.spec, channels, (h, w))) from None
        if out.ndim != 2 or out.shape[0] != 2:
            raise TeacherError(
                f"teacher {self.spec} is not a classifier: output shape {tuple(out.shape)} for 2 images, "
                "expected 2×classes logits"
            )
        if out.shape[1] != num_classes:
            raise TeacherError(_classes_message(int(out.shape[1]), num_classes, self.spec))
        if not torch.isfinite(out).all():
            raise TeacherError(
                f"teacher {self.spec} gives NaN/Inf logits on an all-zero image: its weights or export are broken"
            )


def load_teacher(
    spec: str,
    *,
    weights: Path | None = None,
    trust_checkpoint: bool = False,
    in_chans: int,
    num_classes: int,
) -> Teacher:
    """Load ``spec`` (a file, or ``timm:<arch>`` with ``weights``) as an eval-mode teacher."""
    spec = str(spec)
    if spec.startswith("timm:"):
        return _load_timm(spec, weights, trust_checkpoint, in_chans, num_classes)
    if weights is not None:
        raise TeacherError(
            f"--teacher-weights is only used with --teacher timm:<arch>; {spec} already holds its weights"
        )
    path = Path(spec).expanduser()
    if not path.exists():
        raise TeacherError(f"teacher file {path} does not exist: check the path (or use timm:<arch> with weights)")
    if not path.is_file():
        raise TeacherError(f"teacher {path} is a directory: pass the model file inside it (.onnx, .pt, .pt2)")
    check_model_size(path, "teacher file", TeacherError)
    kind = sniff_format(path)
    if kind == "onnx":
        return _load_onnx(path, spec, in_chans, num_classes)
    if kind == "torchscript":
        module = _load_torchscript(path)
        return Teacher("torchscript", path, spec, sha256_file(path), module)
    if kind == "torch.export":
        return _load_export(path, spec, in_chans, num_classes)
    if kind == "safetensors":
        raise TeacherError(no_architecture_message(path))
    if kind == "pickle":
        return _load_pickle(path, spec, trust_checkpoint)
    if kind == "corrupt":
        raise TeacherError(f"teacher file {path} is truncated or corrupt (not a readable archive): re-export or re-download it")
    raise TeacherError(
        f"cannot tell what model format {path} is: pass an .onnx file, a TorchScript or torch.export (.pt2) "
        "archive, or timm:<arch> with --teacher-weights"
    )


# ---------------------------------------------------------------------------- messages
def _classes_message(outputs: int, num_classes: int, spec: str) -> str:
    return (
        f"teacher {spec}: classifier has {outputs} outputs but the data has {num_classes} classes; "
        "use a teacher trained on these classes"
    )


def _channels_message(where: str, expected: int, channels: int) -> str:
    kind = "RGB" if expected == 3 else f"{expected}-channel"
    return (
        f"{where} expects {expected} input channel{'s' if expected != 1 else ''} but the data has {channels}: "
        f"use {kind} data or a teacher trained on {channels}-channel images"
    )


def _check_static_input(shape: tuple[int | None, ...], channels: int, hw: tuple[int, int], spec: str) -> None:
    """Compare the teacher's declared (static) input dims with the data's."""
    c, th, tw = shape[1], shape[2], shape[3]
    if c is not None and c != channels:
        raise TeacherError(_channels_message(f"teacher {spec}", c, channels))
    if th is not None and tw is not None and (th, tw) != hw:
        fix = f"pass --image-size {th}" if th == tw else f"resize the data to {th}×{tw}"
        raise TeacherError(f"teacher expects {th}×{tw}, data is {hw[0]}×{hw[1]}: {fix}")


def _explain_forward_error(exc: BaseException, spec: str, channels: int, hw: tuple[int, int]) -> str:
    """Turn a backend's exception on a probe forward into one line with the likely cause."""
    text = str(exc)
    m = re.search(r"to have (\d+) channels, but got (\d+)", text)
    if m:
        return _channels_message(f"teacher {spec}", int(m.group(1)), channels)
    m = re.search(r"Guard failed: \w+\.size\(\)\[(\d)\] == (\d+)", text)
    if m:
        dim, value = int(m.group(1)), int(m.group(2))
        if dim == 1:
            return _channels_message(f"teacher {spec}", value, channels)
        if dim in (2, 3):
            return f"teacher {spec} was exported for {value} pixels in dim {dim}, data is {hw[0]}×{hw[1]}: pass --image-size {value}"
    return (
        f"teacher {spec} failed on a 2×{channels}×{hw[0]}×{hw[1]} input ({type(exc).__name__}: "
        f"{first_line(exc, 160)}); check that it takes {channels}-channel {hw[0]}×{hw[1]} images"
    )


# ---------------------------------------------------------------------------- ONNX
def _onnx_dims(value_info: Any) -> tuple[int | None, ...] | None:
    t = value_info.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.tensor_type.shape.dim)


def _load_onnx(path: Path, spec: str, in_chans: int, num_classes: int) -> Teacher:
    onnx = require("onnx", purpose="to load an ONNX teacher")
    ort = require("onnxruntime", purpose="to run an ONNX teacher")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises many types
        raise TeacherError(f"{path} is not a readable ONNX file (truncated or corrupt?): {first_line(exc)}") from None
    try:
        onnx.checker.check_model(str(path))  # by path: also checks external data files
    except Exception as exc:  # noqa: BLE001
        detail = " ".join(str(exc).split())
        detail = detail if len(detail) <= 200 else detail[:197] + "..."
        raise TeacherError(f"{path} is not a valid ONNX model (onnx.checker: {detail}): re-export it") from None
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    in_dims = [_onnx_dims(i) for i in inputs]
    out_dims = [_onnx_dims(o) for o in graph.output]
    if len(inputs) != 1 or in_dims[0] is None or len(in_dims[0]) != 4:
        got = ", ".join(f"{i.name}: rank {len(d) if d else '?'}" for i, d in zip(inputs, in_dims))
        raise TeacherError(
            f"{path} is not a classifier: expected one N×C×H×W image input, got [{got}]; export it with a single image input"
        )
    if len(graph.output) != 1 or out_dims[0] is None or len(out_dims[0]) != 2:
        got = ", ".join(f"{o.name}: rank {len(d) if d else '?'}" for o, d in zip(graph.output, out_dims))
        raise TeacherError(
            f"{path} is not a classifier: expected one N×classes logits output, got [{got}]; export only the logits"
        )
    if inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        dtype = onnx.TensorProto.DataType.Name(inputs[0].type.tensor_type.elem_type).lower()
        raise TeacherError(f"{path} takes {dtype} input; edgekd feeds float32 images: export the teacher with a float32 input")
    shape = in_dims[0]
    if shape[1] is not None and shape[1] != in_chans:
        raise TeacherError(_channels_message(f"teacher {path.name}", shape[1], in_chans))
    classes = out_dims[0][1]
    if classes is not None and classes != num_classes:
        raise TeacherError(_classes_message(classes, num_classes, path.name))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = _ONNX_THREADS
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise TeacherError(f"ONNX Runtime cannot load {path}: {first_line(exc)}") from None
    return Teacher("onnx", path, spec, sha256_file(path), None, onnx_path=path, input_shape=shape, _session=session)


# ---------------------------------------------------------------------------- TorchScript / torch.export
def _load_torchscript(path: Path) -> torch.nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates jit.load; still the loader
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise TeacherError(f"{path} is not a loadable TorchScript archive (truncated or corrupt?): {first_line(exc)}") from None
    return module.eval()


def _load_export(path: Path, spec: str, in_chans: int, num_classes: int) -> Teacher:
    export_log = logging.getLogger("torch.export")
    level = export_log.level
    export_log.setLevel(logging.ERROR)  # torch logs a traceback as a warning before raising
    try:
        source: Any = str(path) if path.suffix == ".pt2" else io.BytesIO(path.read_bytes())
        program = torch.export.load(source)
    except Exception as exc:  # noqa: BLE001
        raise TeacherError(f"{path} is not a loadable torch.export program (truncated or corrupt?): {first_line(exc)}") from None
    finally:
        export_log.setLevel(level)
    user = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    vals = [nodes[u].meta.get("val") for u in user if u in nodes]
    if len(vals) != 1 or getattr(vals[0], "ndim", 0) != 4:
        raise TeacherError(f"{path} is not a classifier: expected one N×C×H×W image input, got {len(user)} input(s)")
    shape = tuple(d if isinstance(d, int) else None for d in vals[0].shape)
    if shape[1] is not None and shape[1] != in_chans:
        raise TeacherError(_channels_message(f"teacher {path.name}", shape[1], in_chans))
    outs = [n for n in program.graph.nodes if n.op == "output"][0].args[0]
    out_val = outs[0].meta.get("val") if len(outs) == 1 and hasattr(outs[0], "meta") else None
    if out_val is None or out_val.ndim != 2:
        raise TeacherError(f"{path} is not a classifier: expected one N×classes logits output")
    if isinstance(out_val.shape[1], int) and out_val.shape[1] != num_classes:
        raise TeacherError(_classes_message(int(out_val.shape[1]), num_classes, path.name))
    return Teacher("torch.export", path, spec, sha256_file(path), program.module(), input_shape=shape)


# ---------------------------------------------------------------------------- pickles and state_dicts
def _load_pickle(path: Path, spec: str, trust: bool) -> Teacher:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not needs_unpickling(exc):
            raise TeacherError(f"teacher file {path} is truncated or corrupt: {first_line(exc)}") from None
        if not trust:
            raise TeacherError(
                f"{path} is a pickle that needs {refused_global(exc)} to load, which safe loading (torch.load "
                "weights_only=True) refuses because unpickling can run arbitrary code: pass --trust-checkpoint if you "
                "trust its source, or export the teacher to ONNX/TorchScript"
            ) from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:  # noqa: BLE001 - e.g. the model's class is not importable here
            raise TeacherError(f"cannot unpickle {path} ({type(exc2).__name__}: {first_line(exc2)}); "
                               "export the teacher to ONNX/TorchScript instead") from None
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/EOFError/... for broken files
        raise TeacherError(f"teacher file {path} is truncated or corrupt: {first_line(exc)}") from None
    if isinstance(obj, torch.nn.Module):
        return Teacher("pickle", path, spec, sha256_file(path), obj.eval())
    if isinstance(obj, dict):
        raise TeacherError(no_architecture_message(path))
    raise TeacherError(f"{path} holds a {type(obj).__name__}, not a model: pass an nn.Module, ONNX or TorchScript file")


def _load_timm(spec: str, weights: Path | None, trust: bool, in_chans: int, num_classes: int) -> Teacher:
    arch = spec.split(":", 1)[1].strip()
    timm = import_timm()
    if not arch or not timm.is_model(arch):
        raise TeacherError(f"unknown timm architecture '{arch}'{did_you_mean(arch, timm.list_models())}; "
                           "see timm.list_models()")
    if weights is None:
        raise TeacherError(f"--teacher {spec} needs --teacher-weights FILE (a state_dict .pt/.pth or .safetensors); "
                           "edgekd never downloads pretrained weights")
    state = read_state_dict(Path(weights), trust_checkpoint=trust)
    try:
        model = timm.create_model(arch, pretrained=False, in_chans=in_chans, num_classes=num_classes)
    except Exception as exc:  # noqa: BLE001
        raise TeacherError(f"timm cannot build {arch} with {in_chans} channels and {num_classes} classes: {first_line(exc)}") from None
    match_state_dict(model, state, arch, Path(weights), in_chans, num_classes)
    model.load_state_dict(state, strict=True)
    path = Path(weights).expanduser()
    return Teacher("timm", path, spec, sha256_file(path), model.eval())

