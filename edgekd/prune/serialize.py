"""Save and load a structurally pruned student without pickling modules.

A pruned timm model no longer matches its architecture's constructor: convolutions, norms and
linears have fewer channels, and depth pruning replaced some blocks by ``nn.Identity``. Torch-Pruning's own ``tp.state_dict`` pickles module attributes
(classes included), which ``torch.load(weights_only=True)`` rightly refuses. Here the structure is
the list of plain attributes (``out_channels``, ``groups``, ``num_features``, ...) that differ
from a freshly built model, kept as JSON, and the weights are an ordinary state_dict: loading
rebuilds the fresh model, applies the attributes and gives every parameter and buffer the saved
shape. Nothing but tensors and JSON is ever read back.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable

import torch

from ..errors import InputError

_PLAIN = (int, float, bool, str, type(None))


def _plain_attrs(module: torch.nn.Module) -> dict:
    out = {}
    for k, v in vars(module).items():
        if k.startswith("_") or k == "training":
            continue
        if isinstance(v, _PLAIN) or (isinstance(v, tuple) and all(isinstance(x, _PLAIN) for x in v)):
            out[k] = v
    return out


def _kind(module: torch.nn.Module) -> type:
    """The module's class; torch.fx makes a class per GraphModule instance (and per deep copy), so all count as one."""
    return torch.fx.GraphModule if isinstance(module, torch.fx.GraphModule) else type(module)


def removed_blocks(pruned: torch.nn.Module, fresh: torch.nn.Module) -> list[str]:
    """Blocks that depth pruning replaced by ``nn.Identity`` (see :mod:`edgekd.prune.depth`)."""
    fresh_mods = dict(fresh.named_modules())
    return [n for n, m in pruned.named_modules()
            if isinstance(m, torch.nn.Identity) and n in fresh_mods and not isinstance(fresh_mods[n], torch.nn.Identity)]


def structure_diff(pruned: torch.nn.Module, fresh: torch.nn.Module) -> dict[str, dict]:
    """Per module name: the plain attributes whose value differs in ``pruned`` (after removing its removed blocks)."""
    from .depth import replace_with_identity

    fresh = copy.deepcopy(fresh)
    for name in removed_blocks(pruned, fresh):
        replace_with_identity(fresh, name)
    fresh_mods = dict(fresh.named_modules())
    diff: dict[str, dict] = {}
    for name, m in pruned.named_modules():
        ref = fresh_mods.get(name)
        if ref is None or _kind(ref) is not _kind(m):
            raise InputError(f"pruned model has module '{name}' ({type(m).__name__}) that the architecture lacks")
        ours, theirs = _plain_attrs(m), _plain_attrs(ref)
        changed = {k: list(v) if isinstance(v, tuple) else v for k, v in ours.items() if theirs.get(k) != v}
        if changed:
            diff[name] = changed
    return diff


def save_pruned(model: torch.nn.Module, fresh: torch.nn.Module, folder: Path, stem: str = "pruned") -> None:
    """Write ``<stem>.structure.json`` and ``<stem>.pt`` (a plain state_dict) into ``folder``."""
    folder = Path(folder)
    structure = {"removed_blocks": removed_blocks(model, fresh), "modules": structure_diff(model, fresh)}
    (folder / f"{stem}.structure.json").write_text(json.dumps(structure, indent=1) + "\n")
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, folder / f"{stem}.pt")


def load_pruned(build: Callable[[], torch.nn.Module], folder: Path, stem: str = "pruned") -> torch.nn.Module:
    """Rebuild the pruned model saved by :func:`save_pruned` (``build`` makes the unpruned architecture)."""
    folder = Path(folder)
    structure = json.loads((folder / f"{stem}.structure.json").read_text())
    state = torch.load(folder / f"{stem}.pt", map_location="cpu", weights_only=True)
    from .depth import replace_with_identity

    model = build()
    for name in structure["removed_blocks"]:
        replace_with_identity(model, name)
    modules = dict(model.named_modules())
    for name, attrs in structure["modules"].items():
        for k, v in attrs.items():
            setattr(modules[name], k, tuple(v) if isinstance(v, list) else v)
    for full, tensor in state.items():
        owner, _, leaf = full.rpartition(".")
        m = modules[owner]
        if leaf in m._parameters and m._parameters[leaf] is not None:
            m._parameters[leaf] = torch.nn.Parameter(tensor.clone(), requires_grad=m._parameters[leaf].requires_grad)
        elif leaf in m._buffers and m._buffers[leaf] is not None:
            m._buffers[leaf] = tensor.clone()
        else:
            raise InputError(f"saved pruned weights have '{full}', which the architecture lacks")
    model.load_state_dict(state)  # every key present, every shape now matching
    return model.eval()
