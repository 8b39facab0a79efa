"""Pretrained weights for a zoo student (``--student-weights FILE``), and for the network that
``edgekd train-teacher --weights FILE`` fine-tunes (the same bridging, worded for a teacher).

The file is a ``.safetensors`` file or a ``torch.save`` state_dict, read safely by
:func:`edgekd.models._checkpoint.read_state_dict` (``weights_only=True``; a pickled module or
checkpoint with Python objects is refused, with no way around it: students never unpickle).
Wrappers ``{"state_dict": ...}``, ``{"model": ...}``, ``{"model_state_dict": ...}`` and the key
prefixes ``module.`` / ``_orig_mod.`` are unwrapped there.

Two differences between the file and the student are bridged, as timm does for its own
pretrained weights, and reported:

* **input channels**: the first convolution (``pretrained_cfg["first_conv"]``) is adapted with
  ``timm.models._manipulate.adapt_input_conv`` (RGB → gray sums the three filters; gray → RGB
  repeats them, scaled by 1/3);
* **class count**: a classifier (``pretrained_cfg["classifier"]``) with another number of outputs
  is dropped and keeps the student's seeded initialisation.

Anything else that does not fit is one :class:`~edgekd.errors.InputError` line: fewer than half
of the student's tensors found with the right shape means weights of another architecture
(named when it is a zoo architecture or a common one), otherwise the first mismatched, missing
or unexpected key is named with both shapes.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .._io import sha256_file
from ..errors import InputError
from ._checkpoint import read_state_dict

OPTION = "--student-weights"
MIN_MATCHED = 0.5  # below this share of the student's tensors found, the file is another architecture
_GUESSES = ("lcnet_100", "mobilenetv3_large_100", "resnet18", "resnet34", "resnet50")  # besides the zoo


def _counted(key: str) -> bool:
    return not key.endswith("num_batches_tracked")  # a step counter, not a weight (older files lack it)


def _cfg_key(model: torch.nn.Module, field: str) -> str | None:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get(field)
    if isinstance(name, (list, tuple)):
        name = name[0] if name else None
    return name or None


def _stem_key(model: torch.nn.Module, own: dict[str, torch.Tensor]) -> str | None:
    """The first convolution's weight: timm's ``first_conv``, else the first 4-D weight."""
    name = _cfg_key(model, "first_conv")
    if name and f"{name}.weight" in own:
        return f"{name}.weight"
    return next((k for k, v in own.items() if k.endswith("weight") and v.ndim == 4), None)


def _head_keys(model: torch.nn.Module, own: dict[str, torch.Tensor]) -> list[str]:
    """The classifier's weight and bias: timm's ``classifier``, else the last 2-D weight (and its bias)."""
    name = _cfg_key(model, "classifier")
    if not (name and f"{name}.weight" in own):
        last = [k for k, v in own.items() if k.endswith(".weight") and v.ndim == 2]
        if not last:
            return []
        name = last[-1][: -len(".weight")]
    return [k for k in (f"{name}.weight", f"{name}.bias") if k in own]


def _arch(model: torch.nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return f"timm:{cfg['architecture']}" if cfg.get("architecture") else type(model).__name__


def _signature(state: dict[str, torch.Tensor], skip: set[str]) -> set[tuple[str, tuple[int, ...]]]:
    return {(k, tuple(v.shape)) for k, v in state.items() if k not in skip and _counted(k)}


def _looks_like(state: dict[str, torch.Tensor]) -> str | None:
    """The zoo (or a common) architecture whose tensors, stem and head aside, are exactly the file's."""
    from .._compat import import_timm
    from .student import STUDENTS

    timm = import_timm()
    for name in (*STUDENTS, *_GUESSES):
        try:
            with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised for real
                cand = timm.create_model(name, pretrained=False)
        except Exception:  # noqa: BLE001 - a guess, never an error
            continue
        own = cand.state_dict()
        skip = {k for k in [_stem_key(cand, own), *_head_keys(cand, own)] if k}
        if _signature(own, skip) == _signature(state, skip):
            return f"timm:{name}"
    return None


def _shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


def load_student_weights(model: torch.nn.Module, path: Path, *, in_chans: int, num_classes: int,
                         what: str = "student weights", option: str = OPTION, role: str = "student") -> dict:
    """Load pretrained weights from ``path`` into the student ``model`` (in place); a summary of what was done.

    ``in_chans`` and ``num_classes`` are the data's (the student was built for them). ``what``,
    ``option`` and ``role`` word the messages for another caller (``edgekd train-teacher
    --weights``: "teacher weights", "--weights", "--arch"). Returns
    ``{"path", "sha256", "tensors", "matched", "adapted", "reinitialised", "notes"}``: ``tensors``
    the student's weight tensors, ``matched`` how many were loaded unchanged, ``adapted`` and
    ``reinitialised`` the keys bridged as described in the module docstring, ``notes`` one line
    each for a log or report.
    """
    from .._compat import import_timm

    import_timm()  # the torchvision shim first, then timm's own helper
    from timm.models._manipulate import adapt_input_conv

    path = Path(path).expanduser()
    state = read_state_dict(path, what=f"{what} file", option=option, error=InputError, trust_option=None)
    own = model.state_dict()
    arch = _arch(model)
    stem = _stem_key(model, own)
    heads = _head_keys(model, own)
    notes: list[str] = []

    reinit: list[str] = []
    if heads:
        w = heads[0]
        if w not in state:
            reinit = heads
            notes.append(f"{w.rsplit('.', 1)[0]}: not in the file, initialised for {num_classes} classes")
        elif state[w].ndim == 2 and state[w].shape[0] != own[w].shape[0] and state[w].shape[1:] == own[w].shape[1:]:
            reinit = heads
            notes.append(f"{w.rsplit('.', 1)[0]}: {state[w].shape[0]} classes in the file, re-initialised for "
                         f"{num_classes}")

    loaded: dict[str, torch.Tensor] = {}
    adapted: list[str] = []
    bad: list[str] = []  # shape mismatches
    missing: list[str] = []
    for k, mine in own.items():
        if k in reinit:
            continue
        if k not in state:
            if _counted(k):
                missing.append(k)
            continue
        theirs = state[k]
        if theirs.shape == mine.shape:
            loaded[k] = theirs
        elif (k == stem and theirs.ndim == 4 and theirs.shape[0] == mine.shape[0]
              and theirs.shape[2:] == mine.shape[2:]):
            try:
                loaded[k] = adapt_input_conv(int(mine.shape[1]), theirs, base_chans=int(theirs.shape[1]))
            except (NotImplementedError, ValueError, AssertionError):
                bad.append(k)
                continue
            adapted.append(k)
            notes.append(f"{k}: {theirs.shape[1]} input channel(s) in the file, adapted to {in_chans} "
                         "(timm adapt_input_conv)")
        else:
            bad.append(k)
    unexpected = [k for k in state if k not in own and _counted(k) and k not in reinit]

    counted = [k for k in own if _counted(k)]
    found = sum(1 for k in loaded if _counted(k))
    if found < MIN_MATCHED * len(counted):
        guess = _looks_like(state)
        why = (f"they look like {guess}" if guess and guess != arch else
               f"only {found} of the {len(counted)} tensors of {arch} are in the file with the right shape")
        raise InputError(f"{what} {path.name} do not fit {arch}: {why}; give weights saved from {arch}, "
                         f"or pick the {role} they belong to")
    if bad:
        k = bad[0]
        raise InputError(f"{what} {path.name} do not fit {arch}: {k} is {_shape(state[k])} in the file but "
                         f"{_shape(own[k])} in the model ({len(bad)} shape mismatch(es)); give weights saved from {arch}")
    if missing:
        raise InputError(f"{what} {path.name} do not fit {arch}: {len(missing)} tensor(s) missing from the file "
                         f"(e.g. {', '.join(missing[:3])}); give a complete state_dict of {arch}")
    if unexpected:
        raise InputError(f"{what} {path.name} do not fit {arch}: {len(unexpected)} tensor(s) the model does "
                         f"not have (e.g. {', '.join(unexpected[:3])}); give a state_dict of {arch}")
    for k, v in loaded.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise InputError(f"{what} {path.name} hold NaN/Inf in {k}: the file is damaged or from a diverged "
                             "training run; give other weights")

    merged = dict(own)
    merged.update(loaded)
    model.load_state_dict(merged, strict=True)
    return {
        "path": str(path),
        "sha256": sha256_file(path),
        "tensors": len(counted),
        "matched": found - sum(1 for k in adapted if _counted(k)),
        "adapted": adapted,
        "reinitialised": reinit,
        "notes": notes,
    }
