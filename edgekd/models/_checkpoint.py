"""Reading model files: telling formats apart by content, and loading state_dicts safely.

Private helpers of :mod:`edgekd.models.teacher` and :mod:`edgekd.models.student`. Nothing here
unpickles arbitrary objects unless the caller passed ``trust_checkpoint``:
``torch.load(weights_only=True)`` is always tried first.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from .._limits import check_model_size
from ..errors import InputError, TeacherError


def sniff_format(path: Path) -> str:
    """The format of ``path`` from its bytes (zip member names, magic numbers), then its suffix."""
    with open(path, "rb") as f:
        head = f.read(16)
    suffix = path.suffix.lower()
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(path) as z:
                tops = {n.split("/", 1)[1].split("/", 1)[0] for n in z.namelist() if "/" in n}
        except (zipfile.BadZipFile, OSError, ValueError):
            return "corrupt"
        if "archive_format" in tops:
            return "torch.export"
        if "constants.pkl" in tops or "code" in tops:
            return "torchscript"
        if "data.pkl" in tops:
            return "pickle"
        return "unknown"
    if suffix == ".safetensors" or (len(head) > 8 and head[8:9] == b"{" and suffix not in (".onnx", ".pt", ".pth")):
        return "safetensors"
    if suffix == ".onnx":
        return "onnx"
    if head[:1] == b"\x80":  # pickle protocol marker: legacy (non-zip) torch.save
        return "pickle"
    if suffix in (".pt", ".pth", ".pt2", ".bin", ".ckpt", ".pkl"):
        return "corrupt"
    if head[:1] == b"\x08":  # protobuf field 1 (ir_version) varint: very likely ONNX
        return "onnx"
    return "unknown"


def first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def no_architecture_message(path: Path) -> str:
    return (
        f"{path} is a state_dict without an architecture: use --teacher timm:<arch> --teacher-weights {path}"
    )


def needs_unpickling(exc: BaseException) -> bool:
    return "Unsupported global" in str(exc) or "Unsupported operand" in str(exc)


def refused_global(exc: BaseException) -> str:
    """What ``weights_only=True`` refused to unpickle, e.g. ``class torch.nn.modules.container.Sequential``."""
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    return f"the Python object {m.group(1)}" if m else "Python objects beyond tensors"


def read_state_dict(path: Path, *, trust_checkpoint: bool = False, what: str = "teacher weights file",
                    option: str = "--teacher-weights", error: type[InputError] = TeacherError,
                    trust_option: str | None = "--trust-checkpoint") -> dict[str, torch.Tensor]:
    """Tensors of a weights file (.safetensors or torch.save), unwrapped and without ``module.``.

    ``what``, ``option`` and ``error`` word the messages for the caller (teacher or student
    weights); ``trust_option=None`` offers no way around safe loading (the pickle is refused).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise error(f"{what} {path} does not exist: check {option}")
    check_model_size(path, what, error)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001
            raise error(f"weights file {path} is not a readable safetensors file: {first_line(exc)}") from None
    else:
        with open(path, "rb") as f:
            head = f.read(4)
        if not head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x80")):  # torch.save: a zip, or a bare pickle
            raise error(f"weights file {path} is truncated or corrupt: it is neither a torch.save file nor "
                        "safetensors; save model.state_dict() with torch.save or safetensors")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if not needs_unpickling(exc):
                raise error(f"weights file {path} is truncated or corrupt: {first_line(exc)}") from None
            if not trust_checkpoint:
                way_out = f", or pass {trust_option} if you trust its source" if trust_option else ""
                raise error(f"weights file {path} needs {refused_global(exc)} to load, which safe loading "
                            "(torch.load weights_only=True) refuses because unpickling can run code: save "
                            f"model.state_dict() instead{way_out}") from None
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001
            raise error(f"weights file {path} is truncated or corrupt: {first_line(exc)}") from None
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), (dict, torch.nn.Module)):
                inner = obj[key]
                obj = inner.state_dict() if isinstance(inner, torch.nn.Module) else inner
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise error(f"weights file {path} is not a state_dict (name → tensor): save model.state_dict()")
    out = {}
    for k, v in obj.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def match_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], arch: str, path: Path,
                      in_chans: int, num_classes: int) -> None:
    """Raise one line naming a few bad keys and the likely cause when ``state`` does not fit ``model``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or shapes):
        return
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    causes = []
    classifier = cfg.get("classifier")
    clf_key = f"{classifier[0] if isinstance(classifier, (list, tuple)) else classifier}.weight"
    if clf_key in shapes:
        causes.append(f"classifier has {state[clf_key].shape[0]} outputs but the data has {num_classes} classes")
    first = cfg.get("first_conv")
    conv_key = f"{first[0] if isinstance(first, (list, tuple)) else first}.weight"
    if conv_key in shapes and state[conv_key].ndim == 4:
        causes.append(f"{conv_key.rsplit('.', 1)[0]} expects {state[conv_key].shape[1]} input channels "
                      f"but the data has {in_chans}")
    if not causes:
        causes.append(f"the weights were probably saved from a different architecture than timm:{arch}")
    raise TeacherError(f"weights {path.name} do not fit timm:{arch}: {'; '.join(causes)} "
                       f"[{mismatch_summary(missing, unexpected, shapes, state, own)}]")


def mismatch_summary(missing: list[str], unexpected: list[str], shapes: list[str],
                     state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> str:
    """How a state_dict and a model's differ: counts and the first examples of each kind."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} shape mismatches (e.g. {k}: file {list(state[k].shape)} vs model {list(own[k].shape)})")
    return "; ".join(parts)
