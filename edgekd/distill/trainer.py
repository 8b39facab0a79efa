"""Distillation training loop, shared by the distill, prune (fine-tune) and QAT stages.

One loop trains a student for a budget of optimizer steps (:mod:`edgekd.distill.schedule`):
AdamW, linear warm-up then one cosine over the whole budget, seeded batches of consistent
augmented views (:mod:`edgekd.distill.source`: the teacher answers for exactly the image the
student sees). Every ``steps / evaluations`` steps the student is scored on val by its KL
divergence to the teacher (stable on 80 images, where AUC moves in steps of 1/(P·N)) and its val
AUC; the checkpoint kept is the one closest to the teacher among those trained for at least
``min_fraction`` of the budget, with AUC as a guard. Segmentation goes through the same loop: the
data set says its task, and :mod:`edgekd.distill.objective` says what differs (the per-pixel
loss, Dice instead of AUC, masks that move with the view). The same loop fine-tunes a pruned student
and an NNCF-quantized one (QAT): it only needs ``forward``, ``parameters`` and
``state_dict``/``load_state_dict``, which NNCF's quantized torch models keep.
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass

import torch

from .. import _dist
from .._device import autocast, to_device
from .._progress import track
from ..config import DistillConfig
from ..data._base import Dataset
from ..errors import DataError, InputError, TeacherError
from ..models.predict import device_of, predict_logits  # noqa: F401 (predict_logits re-exported)
from .loss import check_kd_params
from .objective import Objective, objective_for
from .schedule import check_steps, lr_factor
from .source import TeacherSignal, step_seed

AUC_GUARD = 0.01  # a checkpoint more than this below the best val score (AUC, Dice) of the eligible ones is not kept
# an evaluation scores every val image; between two, at least this many val splits' worth of images are trained on,
# so evaluating costs a small share of the run (a forward pass on an image costs about a third of a training step's
# work on it). Measured before the rule, on the 128×128 segmentation benchmark: the depth-prune fine-tune (96 steps
# of 8) evaluated its 200 val images 24 times and spent more time scoring than training
EVAL_GAP_VAL_SPLITS = 2


@dataclass
class DistillResult:
    model: torch.nn.Module  # the selected checkpoint's weights, in eval mode
    best_val_score: float  # val score (AUC; Dice for segmentation) of the returned model
    steps_run: int  # optimizer steps trained (fewer than asked when early stopping fired)
    history: list[dict]  # per evaluation: {"step", "loss", "val_kl", "val_auc" (or "val_dice"), "lr", "seconds"}
    initial_val_score: float = float("nan")  # val score before training (a fine-tune's start is a candidate too)
    best_step: int = 0  # the step of the returned checkpoint
    val_kl: float = float("nan")  # its KL divergence to the teacher on val (T = 1)
    steps_planned: int = 0
    metric: str = "auc"  # what the val score is: "auc" | "dice"

    @property
    def best_val_auc(self) -> float:
        """The val score under its classification name (AUC); for segmentation it is the val Dice."""
        return self.best_val_score

    @property
    def initial_val_auc(self) -> float:
        return self.initial_val_score


def distill(
    student: torch.nn.Module,
    data: Dataset,
    signal: TeacherSignal,
    cfg: DistillConfig,
    *,
    steps: int,
    lr: float | None = None,
    seed: int = 0,
    desc: str = "distill",
    keep_start: bool = False,
    features: bool = False,
) -> DistillResult:
    """Train ``student`` in place, on the device it is on, for ``steps`` optimizer steps on the signal's batches.

    ``keep_start``: the model before training is a candidate too (fine-tunes of a pruned or
    quantized model never return something further from the teacher than what they were given).
    Early stopping only after ``cfg.min_fraction`` of the budget, when ``cfg.patience``
    evaluations in a row did not lower the val KL. ``features``: add the FitNets hint loss
    (weight ``cfg.feature_kd``) when the signal carries the teacher's features (online mode).
    """
    lr = cfg.lr if lr is None else lr
    obj = objective_for(data)
    cfg = obj.with_defaults(cfg)  # e.g. the task's temperature
    key = f"val_{obj.metric}"
    _check_args(cfg, steps, lr)
    bs = obj.batch_of(cfg)
    _dist.check_batch(min(bs, len(data.train)))
    _check_data(data, signal, obj)
    device = device_of(student)
    _check_student_outputs(student, data.train.images[:2].to(device), data.num_classes, obj)
    t_val = signal.val.float()

    kl0, auc0 = _evaluate(student, data, t_val, bs, obj)
    history: list[dict] = [{"step": 0, "loss": None, "val_kl": kl0, key: auc0, "lr": 0.0, "seconds": 0.0}]
    kept: dict[int, dict] = {0: copy.deepcopy(student.state_dict())} if (keep_start or steps == 0) else {}
    if steps == 0:
        student.eval()
        return DistillResult(student, auc0, 0, history, auc0, 0, kl0, 0, obj.metric)

    hint = None
    if features and cfg.feature_kd > 0 and signal.feature_module is not None:
        if _dist.world().distributed:
            raise InputError("--feature-kd is not supported with several processes (torchrun) yet: drop it, or run "
                             "one process")
        from .features import FeatureHint

        hint = FeatureHint.between(student, signal.feature_module, data.train.images[:2].to(device))
    groups = _param_groups(student, cfg.weight_decay)
    if hint is not None:
        groups.append({"params": list(hint.parameters()), "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, cfg.warmup_fraction))
    every = max(1, steps // max(1, cfg.evaluations), math.ceil(EVAL_GAP_VAL_SPLITS * len(data.val) / bs))
    eval_at = set(range(every, steps + 1, every)) | {steps}
    min_step = int(math.ceil(cfg.min_fraction * steps))
    generator = torch.Generator().manual_seed(seed)
    order = _Order(len(signal.pool), bs, generator)
    world = _dist.world()
    # DDP with several processes (gradients averaged), the student itself otherwise
    # channels-last on the CPU where the task measured it faster (Objective.channels_last); put back at the end
    layout = torch.channels_last if obj.channels_last and device.type == "cpu" else None
    if layout is not None:
        student.to(memory_format=layout)
    net = _dist.wrap(student, data.train.images[:2].to(device))
    student.train()
    total, count, start, stale, best_kl = 0.0, 0, time.perf_counter(), 0, math.inf
    steps_run = 0
    for step in track(range(1, steps + 1), f"{desc} ({steps} steps)", total=steps):
        batch = order.next()
        idx = _dist.shard(batch)  # this process's part of the step's batch (all of it with one process)
        b = signal.batch(idx, _view_seed(seed, step, world.rank))
        x = to_device(b.images, device)
        if layout is not None:
            x = x.contiguous(memory_format=layout)
        with autocast(device):  # bf16 on CUDA; nothing on the CPU
            if hint is not None:
                feats = student.forward_features(x)
                logits = student.forward_head(feats)
            else:
                logits = net(x)
            loss = obj.loss(logits, b, temperature=cfg.temperature, alpha=cfg.alpha)
            if hint is not None:
                loss = loss + cfg.feature_kd * hint.loss(feats, to_device(b.features, device))
        if not _dist.everywhere(bool(torch.isfinite(loss))):  # every process stops together
            warnings.warn(f"{desc}: loss became non-finite at step {step} (learning rate {lr:g} too high?); "
                          "stopping and keeping the best checkpoint so far", RuntimeWarning, stacklevel=2)
            break
        optimizer.zero_grad(set_to_none=True)
        # DDP averages the processes' gradients: weighting each by its share makes the step the whole batch's mean
        (loss * (len(idx) * world.size / len(batch)) if world.distributed else loss).backward()
        optimizer.step()
        scheduler.step()
        steps_run = step
        total, count = total + float(loss.detach()) * len(idx), count + len(idx)
        if step not in eval_at:
            continue
        total, count = _dist.summed(total, count)  # the whole batches' loss with several processes
        kl, auc = _evaluate(student, data, t_val, bs, obj)
        history.append({"step": step, "loss": total / max(1, count), "val_kl": kl, key: auc,
                        "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - start})
        total, count = 0.0, 0
        student.train()
        if step < min_step:
            continue
        kept[step] = copy.deepcopy(student.state_dict())
        if kl < best_kl * (1 - 1e-3):
            best_kl, stale = kl, 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    if not kept:  # stopped (non-finite loss) before the minimum budget: the last sane state
        kept[steps_run] = copy.deepcopy(student.state_dict())
        if history[-1]["step"] != steps_run:
            kl, auc = _evaluate(student, data, t_val, bs, obj)
            history.append({"step": steps_run, "loss": None, "val_kl": kl, key: auc, "lr": 0.0,
                            "seconds": time.perf_counter() - start})
    best = select_checkpoint([h for h in history if h["step"] in kept], key)
    if layout is not None:
        student.to(memory_format=torch.contiguous_format)  # what export, pruning and safetensors expect
    student.load_state_dict(kept[best["step"]])
    _dist.broadcast_state(student)  # rank 0's BatchNorm statistics everywhere: the next stage starts from one model
    student.eval()
    return DistillResult(student, best[key], steps_run, history, auc0, best["step"], best["val_kl"], steps,
                         obj.metric)


def select_checkpoint(evaluations: list[dict], key: str = "val_auc") -> dict:
    """The evaluation closest to the teacher (lowest val KL) among those within AUC_GUARD of the best val score.

    KL to the teacher over all val images is a smooth, stable criterion on a small val split; AUC on
    80 images moves in coarse steps, so it only guards against a checkpoint that ranks cases worse
    (``key``: ``val_auc``, or ``val_dice`` for segmentation).
    """
    aucs = [h[key] for h in evaluations if not math.isnan(h[key])]
    floor = (max(aucs) - AUC_GUARD) if aucs else -math.inf
    ok = [h for h in evaluations if math.isnan(h[key]) or h[key] >= floor] or evaluations
    return min(ok, key=lambda h: (h["val_kl"], -h["step"]))


def _view_seed(seed: int, step: int, rank: int) -> int:
    """The seed of one step's views: as a single process's on rank 0, another one on every other rank."""
    return (step_seed(seed, step) + 1_000_003 * rank) % (2**63)


class _Order:
    """Seeded batches of pool indices: a fresh permutation each pass, batches never of size 1."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.n, self.bs, self.g = n, min(batch_size, n), generator
        self._queue: list[torch.Tensor] = []

    def next(self) -> torch.Tensor:
        if not self._queue:
            perm = torch.randperm(self.n, generator=self.g)
            self._queue = [perm[sl] for sl in _batch_slices(self.n, self.bs)]
        return self._queue.pop(0)


def val_score(model: torch.nn.Module, data: Dataset, signal: TeacherSignal, cfg: DistillConfig) -> float:
    """``model``'s val score (ROC AUC; mean Dice for segmentation), as :func:`distill` scores its checkpoints."""
    obj = objective_for(data)
    return _evaluate(model, data, signal.val.float(), obj.batch_of(cfg), obj)[1]


def _evaluate(model: torch.nn.Module, data: Dataset, teacher_val: torch.Tensor, batch_size: int,
              obj: Objective) -> tuple[float, float]:
    """(KL(teacher ‖ student) at T = 1, averaged over val images or pixels; the val score: ROC AUC or mean Dice).

    With several processes rank 0 scores and every process gets its figures (the same checkpoint is kept
    and training stops at the same step everywhere)."""
    if _dist.world().distributed:
        return _dist.share(_score_val(model, data, teacher_val, batch_size, obj) if _dist.world().main else None)
    return _score_val(model, data, teacher_val, batch_size, obj)


def _score_val(model: torch.nn.Module, data: Dataset, teacher_val: torch.Tensor, batch_size: int,
               obj: Objective) -> tuple[float, float]:
    logits = predict_logits(model, data.val.images, max(batch_size, 256 if logits_per_image(data) == 1 else 32))
    return obj.kl(logits, teacher_val), obj.score(logits, obj.targets(data.val), data.num_classes)


def logits_per_image(data) -> int:
    """How many logit vectors one image gives (1; H·W for segmentation): sizes inference batches."""
    return int(data.image_size[0] * data.image_size[1]) if objective_for(data).task == "segmentation" else 1


def _batch_slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive batch slices; a trailing batch of one sample joins the previous batch
    (BatchNorm cannot normalise a single sample in train mode)."""
    bounds = list(range(0, n, batch_size)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only: not on biases, norms, or NNCF quantizer scales
    (decaying a quantizer's scale would shrink its range during QAT)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim > 1 and "nncf" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _check_args(cfg: DistillConfig, steps: int | None, lr: float) -> None:
    check_kd_params(cfg.temperature, cfg.alpha)
    check_steps(steps, "distillation steps", allow_zero=True)
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr < 0:
        raise InputError(f"learning rate must be a number >= 0, got {lr!r}: try 3e-3 (1e-4 for QAT)")
    if not isinstance(cfg.patience, int) or isinstance(cfg.patience, bool) or cfg.patience < 1:
        raise InputError(f"early-stopping patience must be an integer >= 1 (evaluations), got {cfg.patience!r}")
    if cfg.batch_size is not None and (not isinstance(cfg.batch_size, int) or isinstance(cfg.batch_size, bool)
                                       or cfg.batch_size < 2):
        raise InputError(f"batch size must be an integer >= 2, got {cfg.batch_size!r}")
    if not isinstance(cfg.weight_decay, (int, float)) or cfg.weight_decay < 0:
        raise InputError(f"weight decay must be >= 0, got {cfg.weight_decay!r}")
    for name, v in (("warm-up fraction", cfg.warmup_fraction), ("minimum budget fraction", cfg.min_fraction)):
        if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise InputError(f"{name} must be in [0, 1], got {v!r}")
    if not isinstance(cfg.evaluations, int) or isinstance(cfg.evaluations, bool) or cfg.evaluations < 1:
        raise InputError(f"val evaluations per training run must be an integer >= 1, got {cfg.evaluations!r}")


def _check_data(data: Dataset, signal: TeacherSignal, obj: Objective) -> None:
    n_train, n_val = len(data.train), len(data.val)
    if n_train < 2:
        raise DataError(f"the train split has {n_train} sample(s); distillation needs at least 2")
    obj.check_targets(data)
    if signal.pool.labelled != n_train:
        raise TeacherError(f"the teacher signal was built on {signal.pool.labelled} labelled images, the train split "
                           f"has {n_train}: rebuild it on this dataset (same split, same order)")
    for name, t, n in (("train", signal.clean, len(signal.pool)), ("val", signal.val, n_val)):
        obj.check_teacher_logits(name, t, n, data)


def _check_student_outputs(student: torch.nn.Module, x: torch.Tensor, k: int, obj: Objective) -> None:
    was_training = student.training
    student.eval()
    with torch.no_grad():
        out = student(x)
    student.train(was_training)
    obj.check_outputs(out, x, k)
