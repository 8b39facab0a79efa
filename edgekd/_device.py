"""Where training runs (``--device``): the one place that picks the torch device and moves things to it.

Training (the teacher's forward pass for the training pool, distillation, the prune fine-tunes,
QAT, ``train-teacher``) runs on the device :func:`resolve_device` returns; everything that is
exported, lowered, measured or saved is on the CPU. Stages hand models to the training loops with
:func:`for_training` and take them back with :func:`to_cpu`, so state dicts in the stage cache are
CPU tensors whatever trained them. On CUDA the training forward passes run under bf16 autocast
(:func:`autocast`); evaluation, the teacher's logits, export and the shipped model stay float32.
On the CPU nothing changes: no autocast, no copies, the same numbers as before ``--device`` existed.

(Not to be confused with :mod:`edgekd.device`, the runner on the *target* device.)
"""
from __future__ import annotations

import contextlib
import copy

import torch

from .errors import InputError, did_you_mean

DEVICES = "auto, cpu, cuda or cuda:N"
CPU = torch.device("cpu")
AUTOCAST_DTYPE = torch.bfloat16  # CUDA training forward passes only; bf16 needs no loss scaling


def check_device(spec: object) -> str:
    """``spec`` lower-cased and stripped, when it names a device kind edgekd knows (one line otherwise)."""
    s = str(spec).strip().lower()
    head, sep, index = s.partition(":")
    if s in ("auto", "cpu") or (head == "cuda" and (not sep or index.isdigit())):
        return s
    raise InputError(f"unknown device '{spec}'{did_you_mean(s, ('auto', 'cpu', 'cuda'))}: use {DEVICES}")


def resolve_device(spec: object = "auto") -> torch.device:
    """``auto`` (CUDA when this torch sees a GPU, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    An unknown name, CUDA asked of a torch without it, or an index past the GPUs there are: one line
    with the fix (:class:`~edgekd.errors.InputError`).
    """
    s = check_device(spec)
    if s == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else CPU
    if s == "cpu":
        return CPU
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise InputError(f"--device {s}: no CUDA device is available to this torch ({torch.__version__}, {build}): "
                         "install a CUDA build of torch (pytorch.org) on a machine with an NVIDIA GPU, or use "
                         "--device cpu (or auto)")
    n = torch.cuda.device_count()
    _, _, index = s.partition(":")
    if index and int(index) >= n:
        raise InputError(f"--device {s}: this machine has {n} CUDA device(s) (cuda:0 … cuda:{n - 1}); "
                         "pick one of them or use --device cuda")
    return torch.device(s)


def describe(device: torch.device) -> dict:
    """The device as report.json records it: name, kind and (CUDA) the GPU and bf16 autocast."""
    device = torch.device(device)
    if device.type != "cuda":
        return {"device": str(device), "type": device.type, "autocast": None}
    index = device.index if device.index is not None else torch.cuda.current_device()
    return {"device": f"cuda:{index}", "type": "cuda", "name": torch.cuda.get_device_name(index),
            "autocast": str(AUTOCAST_DTYPE).removeprefix("torch."), "torch_cuda": torch.version.cuda}


def autocast(device: torch.device):
    """The context for a *training* forward pass: bf16 autocast on CUDA, nothing on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=AUTOCAST_DTYPE)
    return contextlib.nullcontext()


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on ``device``; asynchronous from pinned memory. A tensor already there is returned as it is."""
    device = torch.device(device)
    if x.device == device or (device.type == "cuda" and device.index is None and x.device.type == "cuda"):
        return x
    return x.to(device, non_blocking=x.device.type == "cpu" and x.is_pinned())


def device_of(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without any)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else CPU


def for_training(model: torch.nn.Module, device: torch.device, *, copy_first: bool = False) -> torch.nn.Module:
    """``model`` ready to train on ``device``: moved there in place, or (``copy_first``) a copy moved there so that
    the original stays where it is (a CPU candidate that later stages measure). Already there: ``model`` itself."""
    device = torch.device(device)
    here = device_of(model)
    if here == device or (device.type == here.type == "cuda" and device.index is None):
        return model
    return (copy.deepcopy(model) if copy_first else model).to(device)


def to_cpu(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` moved (in place) to the CPU: what is saved, exported, lowered or measured lives there."""
    return model.cpu()
