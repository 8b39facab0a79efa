"""Truncated-SVD factorization of convolutions and linear layers, at a chosen energy or rank.

A layer's weight, flattened to a matrix ``W`` (``O × I·kh·kw`` for a convolution, ``O × I`` for a
linear), is split by its singular value decomposition ``W ≈ U_r S_r V_rᵀ`` into two layers:

==================  ============================================================================
layer               becomes
==================  ============================================================================
``k×k`` Conv2d      ``k×k`` conv ``I → r`` (the original stride, padding, dilation; no bias), then
                    a ``1×1`` conv ``r → O`` (the original bias): the channel-SVD split
``1×1`` Conv2d      ``1×1`` conv ``I → r`` (the original stride), then ``1×1`` conv ``r → O``
Linear              Linear ``I → r`` (no bias), then Linear ``r → O`` (the original bias)
==================  ============================================================================

Each factor gets ``√S_r`` so both are equally scaled. The rank ``r`` of a layer is the smallest
that keeps ``energy`` of its squared singular values (or ``rank``, capped at the full rank),
rounded up to a multiple of ``round_to``. A layer is left alone when the split would not lower
its MACs (``r·(I·k² + O) >= O·I·k²``), when it is grouped or depthwise (a depthwise filter has
no channel redundancy to remove), when its class is a subclass (timm's ``Conv2dSame`` pads in
``forward``; a plain replacement would change what it computes), and when it is the classifier
or named in ``exclude``. The replacement is an ``nn.Sequential`` of plain layers, so
Torch-Pruning's MACs counter, ONNX export and NNCF see ordinary convolutions.

Deterministic: the SVD runs in float64 on the CPU, and the layers are visited in
``named_modules()`` order. The record that :func:`factorize` returns is JSON and rebuilds the
structure on a fresh copy of the source model (:func:`apply_record`; see
:mod:`edgekd.lowrank.serialize`).
"""
from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..models.stats import count_macs, count_params

METHOD = "svd"  # the record's "method": channel-SVD split (Tucker-2 is not implemented)
ROUND_TO = 8  # ranks are multiples of this by default: CPU kernels vectorise over 8/16 channels (edgekd.prune)


@dataclass(frozen=True)
class LowRankConfig:
    """How much of each layer to keep. Exactly one of ``energy`` and ``rank`` is set."""

    energy: float | None = 0.9  # keep the smallest rank holding this fraction of the squared singular values
    rank: int | None = None  # or: this rank in every layer (capped at the layer's full rank)
    round_to: int = ROUND_TO  # ranks rounded up to a multiple of this (1: no rounding)
    only_if_fewer_macs: bool = True  # leave a layer alone when the split would not lower its MACs
    exclude: tuple[str, ...] = ()  # module names never factorized (the classifier never is)

    def check(self) -> None:
        if (self.energy is None) == (self.rank is None):
            raise InputError("low-rank factorization needs exactly one of energy (e.g. 0.9) and rank (e.g. 16)")
        if self.energy is not None and (not isinstance(self.energy, (int, float)) or isinstance(self.energy, bool)
                                        or not math.isfinite(self.energy) or not 0 < self.energy <= 1):
            raise InputError(f"low-rank energy must be in (0, 1], got {self.energy!r}: try 0.9 "
                             "(1.0 keeps every singular value)")
        if self.rank is not None and (not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1):
            raise InputError(f"low-rank rank must be an integer >= 1, got {self.rank!r}")
        if not isinstance(self.round_to, int) or isinstance(self.round_to, bool) or self.round_to < 1:
            raise InputError(f"low-rank round_to must be an integer >= 1, got {self.round_to!r}: try 8")


@dataclass
class LowRankResult:
    model: nn.Module  # a factorized copy, in eval mode (the source model is left unchanged)
    record: dict[str, Any] = field(default_factory=dict)  # JSON: see factorize()


def factorize(model: nn.Module, example: torch.Tensor, cfg: LowRankConfig | None = None) -> LowRankResult:
    """A copy of ``model`` with its convolutions and linear layers split by truncated SVD.

    ``example`` is one ``1×C×H×W`` input (the layers' output sizes give their MACs). The record:
    ``{"method", "energy", "rank", "round_to", "only_if_fewer_macs", "layers": [...], "skipped":
    [...], "macs_before", "macs_after", "params_before", "params_after"}``; each layer is
    ``{"name", "kind" ("conv" | "linear"), "in_features", "out_features", "kernel_size", "stride",
    "padding", "dilation", "padding_mode", "bias", "rank", "full_rank", "energy_kept",
    "macs_before", "macs_after"}`` and each skipped one ``{"name", "why"}``.
    """
    cfg = cfg or LowRankConfig()
    cfg.check()
    example = _example(example)
    source = copy.deepcopy(model).eval()
    positions = _positions(source, example)  # per layer: output positions per image (H·W, or 1 for a linear)
    head = _classifier_name(source)
    layers: list[dict] = []
    skipped: list[dict] = []
    with _one_thread():
        for name, m in list(source.named_modules()):
            if name not in positions:
                continue
            why = _why_not(name, m, head, cfg)
            if why is None:
                entry, why = _plan(name, m, positions[name], cfg)
            if why is not None:
                skipped.append({"name": name, "why": why})
                continue
            _set_module(source, name, _split(m, entry))
            layers.append(entry)
    source.eval()
    record = {
        "method": METHOD, "energy": cfg.energy, "rank": cfg.rank, "round_to": cfg.round_to,
        "only_if_fewer_macs": cfg.only_if_fewer_macs, "exclude": list(cfg.exclude),
        "layers": layers, "skipped": skipped,
        "macs_before": count_macs(model, example), "macs_after": count_macs(source, example),
        "params_before": count_params(model), "params_after": count_params(source),
    }
    return LowRankResult(source, record)


def apply_record(model: nn.Module, record: dict) -> nn.Module:
    """Give ``model`` (a fresh copy of the source's structure) the factorized layers of ``record``, in place.

    The new layers hold uninitialised-then-placeholder weights: load the factorized model's
    state_dict afterwards (:func:`edgekd.lowrank.serialize.load_lowrank` does both).
    """
    if record.get("method") != METHOD:
        raise InputError(f"low-rank record method {record.get('method')!r} is not '{METHOD}': "
                         "the record was written by another tool or version")
    modules = dict(model.named_modules())
    for entry in record["layers"]:
        m = modules.get(entry["name"])
        if m is None or type(m) not in (nn.Conv2d, nn.Linear):
            found = "missing" if m is None else type(m).__name__
            raise InputError(f"low-rank record names layer '{entry['name']}', which the model has as {found}: "
                             "rebuild from the model the record was made on")
        _check_matches(m, entry)
        _set_module(model, entry["name"], _empty_split(entry))
    return model


def layer_count(model: nn.Module) -> int:
    """Convolutions and linear layers in ``model`` (what a per-layer latency term counts)."""
    return sum(1 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


# ---------------------------------------------------------------------------- planning
def _why_not(name: str, m: nn.Module, head: str | None, cfg: LowRankConfig) -> str | None:
    if name == head:
        return "classifier"
    if name in cfg.exclude:
        return "excluded"
    if type(m) not in (nn.Conv2d, nn.Linear):
        return f"{type(m).__name__} (a subclass may compute more than its weight)"
    if isinstance(m, nn.Conv2d) and m.groups != 1:
        return "depthwise" if m.groups == m.in_channels else f"grouped ({m.groups} groups)"
    return None


def _plan(name: str, m: nn.Module, positions: int, cfg: LowRankConfig) -> tuple[dict | None, str | None]:
    """The layer's record entry (rank from the spectrum), or why it is left alone."""
    w = _matrix(m)
    out_f, in_f = w.shape
    s = torch.linalg.svdvals(w)
    full = int(min(out_f, in_f))
    if cfg.energy is not None:
        r = full if cfg.energy >= 1.0 else _rank_for_energy(s, cfg.energy)
    else:
        r = min(int(cfg.rank), full)
    r = min(full, -(-r // cfg.round_to) * cfg.round_to)
    before = out_f * in_f * positions  # in_f is I·kh·kw for a conv, I for a linear
    after = (r * in_f + out_f * r) * positions
    if cfg.only_if_fewer_macs and after >= before:
        return None, f"no MACs saved at rank {r} of {full} ({after} >= {before})"
    sq = s.pow(2)
    kept = float(sq[:r].sum() / sq.sum()) if float(sq.sum()) > 0 else 1.0
    entry = {"name": name, "kind": "conv" if isinstance(m, nn.Conv2d) else "linear",
             "in_features": int(m.in_channels if isinstance(m, nn.Conv2d) else m.in_features),
             "out_features": int(out_f), "rank": int(r), "full_rank": full, "energy_kept": round(kept, 6),
             "macs_before": int(before), "macs_after": int(after), "bias": m.bias is not None}
    if isinstance(m, nn.Conv2d):
        entry.update(kernel_size=list(m.kernel_size), stride=list(m.stride), padding=_plain(m.padding),
                     dilation=list(m.dilation), padding_mode=m.padding_mode)
    return entry, None


def _rank_for_energy(s: torch.Tensor, energy: float) -> int:
    sq = s.pow(2)
    total = float(sq.sum())
    if total == 0.0:
        return 1
    cum = torch.cumsum(sq, 0) / total
    return int(torch.searchsorted(cum, torch.tensor(energy, dtype=cum.dtype)).item()) + 1


def _matrix(m: nn.Module) -> torch.Tensor:
    return m.weight.detach().to("cpu", torch.float64).reshape(m.weight.shape[0], -1)


# ---------------------------------------------------------------------------- building
def _split(m: nn.Module, entry: dict) -> nn.Sequential:
    """The two factors of ``m`` at ``entry["rank"]``, weights from its SVD."""
    w = _matrix(m)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    r = entry["rank"]
    root = s[:r].sqrt()
    a = (root[:, None] * vh[:r])  # r × (I·k²): the first layer
    b = u[:, :r] * root[None, :]  # O × r: the second layer
    seq = _empty_split(entry)
    first, second = seq[0], seq[1]
    dtype, device = m.weight.dtype, m.weight.device
    with torch.no_grad():
        first.weight.copy_(a.reshape(first.weight.shape).to(device, dtype))
        second.weight.copy_(b.reshape(second.weight.shape).to(device, dtype))
        if m.bias is not None:
            second.bias.copy_(m.bias.detach())
    seq.to(device)
    seq.train(m.training)
    return seq


def _empty_split(entry: dict) -> nn.Sequential:
    r, i, o, bias = entry["rank"], entry["in_features"], entry["out_features"], entry["bias"]
    if entry["kind"] == "linear":
        return nn.Sequential(nn.Linear(i, r, bias=False), nn.Linear(r, o, bias=bias))
    padding = entry["padding"] if isinstance(entry["padding"], str) else tuple(entry["padding"])
    first = nn.Conv2d(i, r, tuple(entry["kernel_size"]), stride=tuple(entry["stride"]), padding=padding,
                      dilation=tuple(entry["dilation"]), bias=False, padding_mode=entry["padding_mode"])
    return nn.Sequential(first, nn.Conv2d(r, o, 1, bias=bias))


def _check_matches(m: nn.Module, entry: dict) -> None:
    conv = isinstance(m, nn.Conv2d)
    have = (m.in_channels, m.out_channels) if conv else (m.in_features, m.out_features)
    if entry["kind"] != ("conv" if conv else "linear") or list(have) != [entry["in_features"], entry["out_features"]]:
        raise InputError(f"low-rank record's layer '{entry['name']}' is {entry['kind']} "
                         f"{entry['in_features']}→{entry['out_features']} but the model has {type(m).__name__} "
                         f"{have[0]}→{have[1]}: rebuild from the model the record was made on")


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, nn.Sequential) and child.isdigit():
        parent[int(child)] = new
    else:
        setattr(parent, child, new)


# ---------------------------------------------------------------------------- inspection
def _positions(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Per Conv2d / Linear that runs on ``example``: output positions per image (H·W; a linear's leading dims)."""
    out: dict[str, int] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            def hook(mod, args, y, name=name):
                n = int(y.shape[0]) if y.ndim > 1 else 1
                per_call = int(y.numel() // max(n, 1) // y.shape[1 if isinstance(mod, nn.Conv2d) else -1])
                out[name] = out.get(name, 0) + per_call  # a layer called twice costs twice
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return out


def _classifier_name(model: nn.Module) -> str | None:
    from ..distill.objective import CLASSIFICATION

    try:
        return CLASSIFICATION.head_name(model)
    except InputError:
        return None


def _example(example: torch.Tensor) -> torch.Tensor:
    if not isinstance(example, torch.Tensor) or example.ndim != 4:
        shape = tuple(example.shape) if isinstance(example, torch.Tensor) else type(example).__name__
        raise InputError(f"low-rank factorization needs a 1×C×H×W example input, got {shape}")
    return example[:1].detach().float()


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """LAPACK's SVD on one thread: on a loaded 2-core machine two threads made a 1280×512 SVD 50× slower
    (17 s vs 0.09 s, measured), and these matrices are small enough that one thread is never slow."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _plain(v: Any) -> Any:
    return v if isinstance(v, str) else list(v)


def config_dict(cfg: LowRankConfig) -> dict:
    d = asdict(cfg)
    d["exclude"] = list(cfg.exclude)
    return d
