"""Save and load a factorized model without pickling modules (as :mod:`edgekd.prune.serialize` does for pruned ones).

The structure is the JSON record of :func:`edgekd.lowrank.factorize` (which layers became two,
at which rank, with their shapes), the weights an ordinary state_dict. Loading builds the model
the factorization started from (``build``: a fresh zoo student, or a pruned one rebuilt by
:func:`edgekd.prune.serialize.load_pruned`), applies the record and loads the state_dict with
``weights_only=True``. Nothing but tensors and JSON is ever read back.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import InputError
from .factorize import apply_record


def save_lowrank(model: torch.nn.Module, record: dict, folder: Path, stem: str = "lowrank") -> None:
    """Write ``<stem>.structure.json`` (the record) and ``<stem>.pt`` (a plain state_dict) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.structure.json").write_text(json.dumps(record, indent=1) + "\n")
    torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, folder / f"{stem}.pt")


def load_lowrank(build: Callable[[], torch.nn.Module], folder: Path, stem: str = "lowrank") -> torch.nn.Module:
    """Rebuild the model saved by :func:`save_lowrank`; ``build`` makes the model before factorization."""
    folder = Path(folder)
    path = folder / f"{stem}.structure.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the low-rank structure {path} ({type(exc).__name__}): "
                         "it is written by save_lowrank next to its .pt") from None
    state = torch.load(folder / f"{stem}.pt", map_location="cpu", weights_only=True)
    model = apply_record(build(), record)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"low-rank weights {folder / (stem + '.pt')} do not fit the structure in {path}: "
                         f"{str(exc).splitlines()[0]}") from None
    return model.eval()
