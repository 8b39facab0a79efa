"""Structural channel pruning of a segmentation model (a U-Net student) to a MACs budget.

The same Torch-Pruning machinery and conventions as :mod:`edgekd.prune.pruner` (group magnitude
or Taylor importance, one uniform channel ratio searched so the MACs land just under the target,
kept channel counts rounded to multiples of 8): DepGraph follows each encoder stage into the
``torch.cat`` of the decoder block that takes it as a skip connection, so when an encoder stage
loses channels the decoder's input channels shrink with it and the concatenations still line
up. The layer that produces the logits (smp's ``segmentation_head``) keeps its K outputs; the
model still maps N×C×H×W to N×K×H×W. Fine-tuning after pruning is the caller's loop.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..errors import EdgekdError, InputError, did_you_mean
from ..models.stats import count_macs, count_params
from .pruner import IMPORTANCE, _prune_to, warn_unreached


@dataclass
class SegPruned:
    model: torch.nn.Module  # the pruned copy, in eval mode (the input model is left unchanged)
    channel_ratio: float  # fraction of every prunable layer's channels removed
    macs_before: int  # one forward pass on the 1×C×H×W example
    macs_after: int
    params_before: int
    params_after: int


def seg_head_name(model: torch.nn.Module) -> str:
    """Name of the convolution that produces the per-pixel logits (never pruned).

    smp models: ``segmentation_head.0``; otherwise the last Conv2d of the model.
    """
    from ..distill.objective import SEGMENTATION

    return SEGMENTATION.head_name(model)


def seg_taylor_grads(model: torch.nn.Module, images: torch.Tensor, teacher_logits: torch.Tensor,
                     masks: torch.Tensor, *, temperature: float, alpha: float) -> dict[str, torch.Tensor]:
    """Gradients of the pixel-wise KD loss on one batch (eval mode: BN statistics untouched), for Taylor importance."""
    from ..distill.seg_loss import seg_kd_loss

    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    try:
        seg_kd_loss(model(images), teacher_logits, masks, temperature=temperature, alpha=alpha).backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return grads


def prune_seg_to(model: torch.nn.Module, example: torch.Tensor, target_macs: int, *,
                 importance: str = "magnitude", grads: dict[str, torch.Tensor] | None = None) -> SegPruned:
    """A pruned copy of ``model`` whose MACs on ``example`` (1×C×H×W) are just under ``target_macs``.

    ``importance="taylor"`` needs ``grads`` (:func:`seg_taylor_grads`). Raises one line when the
    pruned model's output is no longer N×K×H×W.
    """
    if importance not in IMPORTANCE:
        raise InputError(f"unknown prune importance '{importance}'{did_you_mean(str(importance), IMPORTANCE)}: "
                         f"use one of {', '.join(IMPORTANCE)}")
    if importance == "taylor" and grads is None:
        raise InputError("Taylor importance needs gradients: pass grads=seg_taylor_grads(model, images, teacher, "
                         "masks, ...), or importance='magnitude'")
    if not isinstance(example, torch.Tensor) or example.ndim != 4 or example.shape[0] != 1:
        raise InputError(f"the example must be one 1×C×H×W image, got {getattr(example, 'shape', example)!r}")
    if isinstance(target_macs, bool) or not isinstance(target_macs, int) or target_macs < 1:
        raise InputError(f"target MACs must be a positive integer, got {target_macs!r}")
    with torch.no_grad():
        expected = tuple(copy.deepcopy(model).eval()(example).shape)
    macs0, params0 = count_macs(model, example), count_params(model)
    trial = _prune_to(model, example, target_macs, seg_head_name(model), importance,
                      grads if importance == "taylor" else None)
    if not trial.reached:
        warn_unreached(target_macs, trial, stacklevel=2)
    pruned = trial.model.eval()
    with torch.no_grad():
        out = tuple(pruned(example).shape)
    if out != expected:
        raise EdgekdError(f"pruning changed the segmentation output to {out} (expected {expected}): report this "
                          "model architecture as a bug, or run with --prune-ratio 0")
    return SegPruned(pruned, trial.ratio, macs0, trial.macs, params0, count_params(pruned))
