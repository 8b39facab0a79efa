"""Depth pruning: remove whole blocks whose output has the shape of their input.

Channel pruning shrinks every layer but keeps their number. On a small input a CPU runtime's time
per layer (dispatch, memory traffic, thread synchronisation) dominates the arithmetic, so a
student with fewer layers is faster than one with thinner layers at the same MACs (measured:
lcnet_100 at 64×64 stays near 0.18 ms in OpenVINO however many channels are removed). A block
whose output shape equals its input shape (a stride-1 residual block, or a same-width depthwise
separable block) can be replaced by ``nn.Identity`` and the network still runs; distillation
then recovers what the block did.

Blocks are removed one at a time, greedily: each removable block is scored by the distillation
loss (KL to the teacher's val logits at temperature T) of the student with that block replaced,
and the least harmful goes. With ``by_cost`` the harm is divided by the MACs the removal saves (a
removal that raises the KD loss by less than ``HARM_TOLERANCE`` of it counts as raising it by that
much), so among blocks that harm about equally the one that saves most arithmetic goes: at 128×128
a U-Net encoder's high-resolution blocks cost up to twice the MACs of its low-resolution ones, and
the KD losses of removing either were measured within 0.5 % of each other (benchmarks/README.md,
segmentation), which left the plain greedy choice to small differences. Only the lowest-level
blocks inside ``nn.Sequential`` containers are candidates (a block that holds other removable
blocks is not), so a stage is thinned block by block rather than dropped whole.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass
class DepthStep:
    removed: list[str]  # module names replaced by nn.Identity, in removal order
    scores: list[float]  # the KD loss after each removal (lower: less harmful)
    macs_saved: list[int] = field(default_factory=list)  # per removal, on one example image (by_cost only)


# by_cost: a removal that raises the KD loss by less than this share of it counts as raising it by this share, so
# the blocks that harm (almost) nothing are ranked by the MACs they save, not by differences the fine-tune after
# the cut recovers anyway
HARM_TOLERANCE = 0.01


def removable_blocks(model: torch.nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the lowest-level children of ``nn.Sequential`` containers that keep their input's shape."""
    shapes: dict[str, tuple] = {}
    hooks = []
    for parent_name, parent in model.named_modules():
        if not isinstance(parent, torch.nn.Sequential):
            continue
        for child_name, child in parent.named_children():
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if isinstance(child, torch.nn.Identity) or not any(True for _ in child.parameters()):
                continue
            if not any(True for _ in child.children()):  # a bare layer (a deep stem's conv), not a block
                continue
            if not any(isinstance(m, torch.nn.Conv2d) for m in child.modules()):
                continue

            def hook(mod, inputs, output, name=name):
                if inputs and isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor):
                    shapes[name] = (tuple(inputs[0].shape), tuple(output.shape))
            hooks.append(child.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    same = [n for n, (i, o) in shapes.items() if i == o]
    return [n for n in same if not any(m != n and m.startswith(n + ".") for m in same)]


def replace_with_identity(model: torch.nn.Module, name: str) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, torch.nn.Sequential) and child.isdigit():
        parent[int(child)] = torch.nn.Identity()
    else:
        setattr(parent, child, torch.nn.Identity())


def _kd_score(model: torch.nn.Module, images: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> float:
    """KL(teacher ‖ model) at ``temperature``, summed over classes (and pixels), averaged over the images.

    The forward passes take :func:`edgekd.lower._base.images_per_call` images at a time: eager torch on the
    CPU is 2.7× slower on 200 images of 128×128 in one batch than 16 at a time (measured)."""
    from ..lower._base import images_per_call
    from ..models.predict import predict_logits

    model.eval()
    s = F.log_softmax(predict_logits(model, images, images_per_call(images.shape)) / temperature, dim=1)
    t = F.softmax(teacher_logits.float().to(s.device) / temperature, dim=1)
    return float(F.kl_div(s, t, reduction="batchmean"))


def remove_blocks(model: torch.nn.Module, n: int, images: torch.Tensor, teacher_logits: torch.Tensor,
                  temperature: float, *, allowed: Callable[[torch.nn.Module, str], bool] | None = None,
                  refit: Callable[[torch.nn.Module], None] | None = None,
                  by_cost: bool = False) -> tuple[torch.nn.Module, DepthStep]:
    """A copy of ``model`` with ``n`` blocks replaced by ``nn.Identity``, the least harmful first.

    ``allowed(model, name)`` can rule blocks out (e.g. the last one of a stage); ``refit(model)``
    runs after every cut, before scoring (e.g. re-estimating BatchNorm statistics). ``by_cost``:
    the least harmful per MAC saved first (see the module docstring). Stops early (fewer removed)
    when no removable block is left.
    """
    from ..models.stats import count_macs

    model = copy.deepcopy(model).eval()
    example = images[:1]
    removed, scores, saved = [], [], []
    before = None  # the current model's score: the last removal's, unless a refit changes the model after it
    for _ in range(n):
        candidates = [c for c in removable_blocks(model, example) if allowed is None or allowed(model, c)]
        if not candidates:
            break
        if by_cost:
            if before is None or refit is not None:
                before = _kd_score(model, images, teacher_logits, temperature)
            macs = count_macs(model, example)
            floor = max(HARM_TOLERANCE * abs(before), 1e-12)
        best = None  # (rank, name, score, macs saved)
        for name in candidates:
            trial = copy.deepcopy(model)
            replace_with_identity(trial, name)
            if refit is not None:
                refit(trial)
            score = _kd_score(trial, images, teacher_logits, temperature)
            cut = macs - count_macs(trial, example) if by_cost else 0
            rank = max(score - before, floor) / max(cut, 1) if by_cost else score
            if best is None or rank < best[0]:
                best = (rank, name, score, cut)
        _, name, score, cut = best
        replace_with_identity(model, name)
        if refit is not None:
            refit(model)
        removed.append(name)
        scores.append(score)
        before = score  # the model is now the trial just scored (with a refit it is scored again above)
        if by_cost:
            saved.append(int(cut))
    return model, DepthStep(removed, scores, saved)
