"""Structural channel pruning to a MACs budget, with distillation fine-tuning between steps.

A thin layer over Torch-Pruning (DepGraph): its dependency graph finds the channels that must
go together (residual adds, depthwise convs, squeeze-excite blocks) and removes them for real,
so the pruned model is a smaller dense model that any runtime speeds up. What edgekd adds is
the schedule: Torch-Pruning is driven by a channel ratio, the user asks for a MACs budget, so
each step searches the channel ratio whose result lands just under that step's MACs target.
Optionally (``PruneConfig.depth``) whole shape-preserving blocks are removed first
(:mod:`edgekd.prune.depth`): fewer layers is what makes a small student fast on a CPU.
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from ..config import DistillConfig, PruneConfig
from ..data._base import Dataset
from ..distill.objective import objective_for
from ..distill.schedule import check_steps
from ..distill.source import TeacherSignal
from ..distill.trainer import distill, val_score
from ..errors import InputError, did_you_mean
from ..models.predict import device_of
from ..models.stats import count_macs, count_params

IMPORTANCE = ("magnitude", "taylor")  # allowed PruneConfig.importance values
MAX_RATIO = 0.95  # PruneConfig.ratio must be below this
MACS_TOLERANCE = 0.02  # a step is done when its MACs are in [(1 - tol)·target, target]
MAX_TRIALS = 12  # channel-ratio trials per step before taking the closest one under target
MIN_STEP = 0.005  # smallest change of the channel ratio between two trials
# Kept channel counts are multiples of this: CPU kernels (ONNX Runtime's MLAS, oneDNN) vectorise
# over 8/16 channels, and odd counts made pruned models SLOWER than unpruned ones in ONNX Runtime
# (measured: lcnet_050 pruned 50 % ran 0.45 ms vs 0.19 ms unpruned at 64×64 without rounding).
ROUND_TO = 8
# Depth-only pruning (no channel step after it: segmentation's default) fine-tunes the final structure right
# after the cut. When that fine-tuned student's val score is within this of the unpruned student's, the
# recovery is skipped: there is nothing left to recover. A quarter of the default 0.01 AUC / Dice budgets;
# measured on the segmentation benchmark (benchmarks/README.md), twice the 360-step recovery kept its start
# (val Dice 0.7988 unpruned, 0.7977 after the cut and its 96-step fine-tune) and cost about 150 s.
RECOVERY_TOLERANCE = 0.0025


@dataclass
class PruneResult:
    model: torch.nn.Module  # pruned and fine-tuned, in eval mode
    params_before: int
    params_after: int
    macs_before: int  # one forward pass on a 1×C×H×W input
    macs_after: int
    steps: list[dict]  # per step: {"step", "macs", "params", "val_auc" (or "val_dice"), "target_macs", "channel_ratio"}
    target_macs: int = 0  # (1 − ratio)·macs_before


@dataclass
class _Trial:
    ratio: float
    model: torch.nn.Module
    macs: int
    reached: bool = True  # False: no ratio got under the target; this is the smallest copy tried


def prune(
    model: torch.nn.Module,
    data: Dataset,
    teacher_logits: TeacherSignal,
    cfg: PruneConfig,
    distill_cfg: DistillConfig,
    *,
    finetune_steps: int | None = None,
    recovery_steps: int | None = None,
    seed: int = 0,
) -> PruneResult:
    """Remove channels until the model's MACs are ``(1 − cfg.ratio)`` of what they were.

    ``cfg.steps`` steps, each targeting MACs linearly interpolated toward the final budget,
    each followed by ``finetune_steps`` optimizer steps of distillation so the next step ranks
    channels of a recovered model; then ``recovery_steps`` of distillation on the final structure (skipped
    after depth-only pruning that lost at most RECOVERY_TOLERANCE val score, unless ``cfg.recovery_steps``
    asked for it). A step whose target no ratio reaches keeps the smallest structure tried and says so in
    its record (``target_reached`` False; :func:`unreached_text`). The classifier keeps its outputs. The
    returned model is a new object when pruning happened; the input model is left unchanged.
    """
    obj = objective_for(data)
    cfg = obj.prune_defaults(cfg)  # None: the task's ratio
    _check_config(cfg)
    distill_cfg = obj.with_defaults(distill_cfg)
    score = f"val_{obj.metric}"
    # the pipeline passes the run's budget; a direct call falls back to the config's counts (or none)
    finetune_steps = (cfg.finetune_steps or 0) if finetune_steps is None else finetune_steps
    recovery_steps = (cfg.recovery_steps or 0) if recovery_steps is None else recovery_steps
    example = data.train.images[:1].to(device_of(model))
    macs0, params0 = count_macs(model, example), count_params(model)
    depth = auto_depth(model, example) if cfg.depth is None else cfg.depth
    if cfg.ratio == 0 and depth == 0:
        model.eval()
        return PruneResult(model, params0, params0, macs0, macs0, [], macs0)

    steps: list[dict] = []
    channel_steps = cfg.steps if cfg.ratio > 0 else 0
    # the recovery may be skipped (RECOVERY_TOLERANCE) only when its steps were derived, not asked for
    unpruned = val_score(model, data, teacher_logits, distill_cfg) \
        if depth > 0 and channel_steps == 0 and recovery_steps > 0 and cfg.recovery_steps is None else None
    if depth > 0:
        model, step = _prune_depth(model, data, teacher_logits, depth, distill_cfg, seed, finetune_steps)
        steps.append(step)
    classifier_name = obj.head_name(model)
    for k in range(1, channel_steps + 1):
        target = int(round(macs0 * (1.0 - cfg.ratio * k / cfg.steps)))
        taylor = cfg.importance == "taylor"
        grads = _taylor_grads(model, data, teacher_logits, distill_cfg, seed + k) if taylor else None
        trial = _prune_to(model, example, target, classifier_name, cfg.importance, grads)
        obj.check_pruned(trial.model, example, data.num_classes)
        tuned = distill(trial.model, data, teacher_logits, distill_cfg, steps=finetune_steps, seed=seed + k,
                        desc=f"prune {k}/{cfg.steps} fine-tune", keep_start=True)
        model = tuned.model
        steps.append({"step": k, "macs": trial.macs, "params": count_params(model), score: tuned.best_val_score,
                      "target_macs": target, "channel_ratio": round(trial.ratio, 4),
                      "target_reached": trial.reached})  # False: the smallest structure (see unreached_text)
    if unpruned is not None:
        steps[-1][f"{score}_unpruned"] = unpruned
        if steps[-1][score] >= unpruned - RECOVERY_TOLERANCE:
            steps[-1]["recovery_steps"] = 0
            steps[-1]["recovery_skipped"] = (f"the depth-pruned student's fine-tune already reached {score} "
                                             f"{steps[-1][score]:.4f} against {unpruned:.4f} unpruned (within "
                                             f"{RECOVERY_TOLERANCE}): nothing to recover")
            recovery_steps = 0
    if recovery_steps > 0:  # the pruned structure is final: recover, as patiently as the budget allows
        recovered = distill(model, data, teacher_logits, distill_cfg, steps=recovery_steps,
                            seed=seed + cfg.steps + 1, desc="prune recovery", keep_start=True)
        model = recovered.model
        steps[-1]["recovery_steps"] = recovered.steps_run
        steps[-1]["recovery_best_step"] = recovered.best_step
        steps[-1][f"{score}_after_recovery"] = recovered.best_val_score
    model.eval()
    target = steps[-1].get("target_macs", steps[-1]["macs"])
    return PruneResult(model, params0, count_params(model), macs0, steps[-1]["macs"], steps, target)


def auto_depth(model: torch.nn.Module, example: torch.Tensor) -> int:
    """The default depth: half of the blocks that keep their input's shape (rounded down).

    Fewer layers is what makes a small student fast on a CPU (per-layer dispatch dominates at
    medical image sizes); half keeps every stage and leaves the rest to distillation to recover.
    """
    from .depth import removable_blocks

    return len(removable_blocks(copy.deepcopy(model).eval(), example)) // 2


def _prune_depth(model: torch.nn.Module, data: Dataset, teacher_logits: TeacherSignal, depth: int,
                 distill_cfg: DistillConfig, seed: int, finetune_steps: int) -> tuple[torch.nn.Module, dict]:
    """Remove ``depth`` blocks (least harmful first, scored on val), then fine-tune with distillation."""
    from .depth import remove_blocks

    n = min(len(data.val), 512)
    images = data.val.images[:n].to(device_of(model))
    obj = objective_for(data)
    slim, dstep = remove_blocks(model, depth, images, teacher_logits.val[:n], distill_cfg.temperature,
                                by_cost=obj.depth_by_cost)
    if len(dstep.removed) < depth:
        warnings.warn(f"depth pruning removed {len(dstep.removed)} of {depth} blocks: no other block keeps its "
                      "input's shape", RuntimeWarning, stacklevel=3)
    example = images[:1]
    obj.check_pruned(slim, example, data.num_classes)
    tuned = distill(slim, data, teacher_logits, distill_cfg, steps=finetune_steps, seed=seed,
                    desc="depth prune fine-tune", keep_start=True)
    return tuned.model, {"step": 0, "kind": "depth", "removed_blocks": dstep.removed, "kd_scores": dstep.scores,
                         **({"macs_saved": dstep.macs_saved} if dstep.macs_saved else {}),
                         "macs": count_macs(tuned.model, example), "params": count_params(tuned.model),
                         f"val_{obj.metric}": tuned.best_val_score}


def _prune_to(model: torch.nn.Module, example: torch.Tensor, target: int, classifier_name: str,
              importance: str, grads: dict[str, torch.Tensor] | None) -> _Trial:
    """Search the uniform channel ratio whose pruned copy has MACs just under ``target``.

    MACs shrink roughly with (1 − r)² when every layer keeps a fraction 1 − r of its channels,
    so each trial predicts the next ratio from that law, kept inside the bracket of ratios
    already known to be too weak / strong enough (a safeguarded Newton search on a step function).
    When no trial gets under ``target``, the smallest one is returned with ``reached=False``: the
    caller says so in its own terms (the prune stage's log line, :func:`unreached_text`; a warning,
    :func:`warn_unreached`, from a direct call with a MACs target).
    """
    current = count_macs(model, example)
    if current <= target:
        return _Trial(0.0, copy.deepcopy(model), current)
    lo, best, smallest = 0.0, None, None  # lo: largest ratio known to leave MACs above target
    r = 1.0 - math.sqrt(target / current)
    for _ in range(MAX_TRIALS):
        trial = _prune_copy(model, example, r, classifier_name, importance, grads)
        smallest = trial if smallest is None or trial.macs < smallest.macs else smallest
        above = trial.macs > target
        if above:
            lo = max(lo, r)
        elif best is None or trial.macs > best.macs:
            best = trial
        if not above and trial.macs >= (1.0 - MACS_TOLERANCE) * target:
            return trial
        hi = best.ratio if best is not None else MAX_RATIO
        guess = 1.0 - (1.0 - r) * math.sqrt(target / trial.macs)
        # MACs are a step function of r: always move by at least MIN_STEP, or the search stalls on a flat
        guess = max(guess, r + MIN_STEP) if above else min(guess, r - MIN_STEP)
        r = guess if lo < guess < hi else (lo + hi) / 2.0
    if best is None:  # the smallest trial, not the strongest ratio: near the top, rounding to multiples of 8
        # makes Torch-Pruning leave whole layers uncut, so MACs can rise again with the ratio
        smallest.reached = False
        return smallest
    return best


def unreached_text(steps: list[dict], ratio: float) -> str | None:
    """One line on the channel steps whose MACs target no ratio reached (None when every step reached its own)."""
    short = [s for s in steps if s.get("target_reached") is False]
    if not short:
        return None
    which = ", ".join(f"{s['step']} ({s['target_macs'] / 1e6:.2f} M)" for s in short)
    return (f"prune: channel step{'s' if len(short) > 1 else ''} {which} stopped short at "
            f"{short[-1]['macs'] / 1e6:.2f} M MACs: the student's layers are down to their last channels, so "
            f"--prune-ratio {ratio:g} asks for more than it has; each step still fine-tunes the smallest structure")


def warn_unreached(target: int, trial: _Trial, stacklevel: int = 1) -> None:
    """The warning for a channel step whose MACs target no ratio reached (``trial``: the smallest copy)."""
    warnings.warn(f"pruning could not reach {target} MACs (the smallest trial had {trial.macs}): some layers are "
                  "down to their last channels; lower --prune-ratio", RuntimeWarning, stacklevel=stacklevel + 1)


def _prune_copy(model: torch.nn.Module, example: torch.Tensor, ratio: float, classifier_name: str,
                importance: str, grads: dict[str, torch.Tensor] | None) -> _Trial:
    """A deep copy of ``model`` with a fraction ``ratio`` of every prunable layer's channels removed."""
    import torch_pruning as tp

    pruned = copy.deepcopy(model).eval()
    if grads is not None:  # deepcopy drops .grad; Taylor importance reads it
        for name, p in pruned.named_parameters():
            p.grad = grads[name].clone() if name in grads else None
    scorer: Callable = tp.importance.GroupTaylorImportance() if importance == "taylor" \
        else tp.importance.GroupMagnitudeImportance(p=2)
    pruner = tp.pruner.BasePruner(
        pruned, example, scorer, pruning_ratio=float(ratio), iterative_steps=1, global_pruning=False,
        ignored_layers=[pruned.get_submodule(classifier_name)], round_to=ROUND_TO,
    )
    pruner.step()
    pruned.zero_grad(set_to_none=True)
    return _Trial(float(ratio), pruned, count_macs(pruned, example))


def _taylor_grads(model: torch.nn.Module, data: Dataset, teacher: TeacherSignal, cfg: DistillConfig,
                  seed: int) -> dict[str, torch.Tensor]:
    """Gradients of the KD loss on one seeded training batch (eval mode: BN statistics untouched)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data.train), generator=g)[: max(objective_for(data).batch_of(cfg), 2)]
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    try:
        from ..distill.source import Batch

        dev = device_of(model)
        obj = objective_for(data)
        x, y = data.train.images[idx].to(dev), obj.targets(data.train)[idx].to(dev)
        batch = Batch(x, teacher.train[idx].float().to(dev), y, y, torch.ones(len(idx), device=dev))
        loss = obj.loss(model(x), batch, temperature=cfg.temperature, alpha=cfg.alpha)
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return grads


def _check_config(cfg: PruneConfig) -> None:
    r = cfg.ratio
    if not isinstance(r, (int, float)) or not math.isfinite(r) or not 0.0 <= r < MAX_RATIO:
        raise InputError(f"prune ratio (fraction of MACs to remove) must be in [0, {MAX_RATIO}), got {r!r}: "
                         "try 0.5, or 0 to skip pruning")
    if not isinstance(cfg.steps, int) or cfg.steps < 1:
        raise InputError(f"prune steps must be an integer >= 1, got {cfg.steps!r}")
    check_steps(cfg.recovery_steps, "prune recovery steps", allow_zero=True)
    check_steps(cfg.finetune_steps, "prune fine-tune steps", allow_zero=True)
    if cfg.depth is not None and (not isinstance(cfg.depth, int) or isinstance(cfg.depth, bool)
                                  or not 0 <= cfg.depth <= 64):
        raise InputError(f"prune depth (blocks to remove) must be an integer in [0, 64], got {cfg.depth!r}")
    if cfg.importance not in IMPORTANCE:
        raise InputError(f"unknown prune importance '{cfg.importance}'{did_you_mean(cfg.importance, IMPORTANCE)}: "
                         f"use one of {', '.join(IMPORTANCE)}")
