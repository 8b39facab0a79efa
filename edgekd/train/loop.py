"""The one supervised training loop: a classifier fitted to labels in phases of optimizer steps.

Used by ``edgekd train-teacher`` (transfer learning: the head alone on a frozen backbone, then the
whole network at a lower learning rate), by the embedded demo's teacher and by the suites'
train-if-missing teachers (:func:`edgekd.train.classic.train_classifier`, one phase). Distillation
of students has its own loop (:mod:`edgekd.distill.trainer`); this one shares its pieces:

* batches: a fresh seeded permutation of the train split each pass (a trailing batch of one joins
  the previous one: BatchNorm cannot normalise a single sample);
* views: any callable ``(images, seed) -> Mixed`` (:class:`edgekd.distill.augment.Augmenter`, the
  "medical" kornia policy with optional mixup, or the classic random shift), given a seed per step
  (:func:`edgekd.distill.source.step_seed`), so the same seed gives the same views;
* loss: cross-entropy, mixed as the images were (``lam·CE(y) + (1 − lam)·CE(y_partner)``);
* optimiser: AdamW per phase over the parameters it trains (no weight decay on biases and norms),
  linear warm-up then one cosine over the phase (:func:`edgekd.distill.schedule.lr_factor`);
* selection on val: every ``every`` steps (and at the end of each phase) the model is scored on the
  val split; the checkpoint kept is the one with the highest val AUC (val accuracy when AUC is
  undefined), ties to the lower val loss; the head phase's checkpoints are candidates too;
* early stopping: once ``min_fraction`` of a phase is trained, ``patience`` evaluations in a row
  with neither a val AUC above the best so far nor a val loss below it (by :data:`LOSS_MARGIN`)
  end the phase; the next phase (the whole network after the head) starts from where it ended.
  ``patience=None``: no early stop. A non-finite loss ends the run (the best checkpoint is kept).

A frozen phase really freezes: the backbone's parameters get no gradient and its modules stay in
eval mode, so BatchNorm statistics do not move either; only the classifier learns.
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .._device import autocast, to_device
from .._progress import track
from ..data._base import Split
from ..distill.augment import Mixed
from ..distill.schedule import lr_factor
from ..distill.source import step_seed
from ..distill.trainer import _batch_slices, _param_groups
from ..errors import DataError, InputError
from ..metrics.classification import roc_auc
from ..models.predict import device_of, predict_logits

Views = Callable[[torch.Tensor, int], Mixed]
LOSS_MARGIN = 1e-4  # early stopping: a val loss lower by less than this share is no improvement


@dataclass(frozen=True)
class Phase:
    """One stretch of training with its own optimiser and schedule."""

    name: str  # "head" (backbone frozen) or "full" (every layer); recorded in the history
    steps: int  # optimizer steps
    lr: float  # peak learning rate (warm-up, then cosine to 0 over the phase)
    frozen_backbone: bool = False  # True: only the classifier trains


@dataclass
class FitResult:
    best_val_auc: float  # val AUC of the returned weights (NaN when undefined)
    best_step: int  # global step of the returned weights (0: the start)
    best_phase: str
    steps_run: int  # optimizer steps trained (fewer than planned when early stopping fired)
    steps_planned: int
    stopped_early: bool  # a phase was ended by early stopping (or the loss diverged)
    history: list[dict] = field(default_factory=list)  # per evaluation: step, phase, train_loss, val_*, lr, seconds
    stopped_phases: list[str] = field(default_factory=list)  # the phases early stopping ended


def identity_views(images: torch.Tensor, seed: int) -> Mixed:
    """No augmentation: the clean images."""
    n = images.shape[0]
    return Mixed(images, torch.arange(n), torch.ones(n, dtype=torch.float32))


def classifier_of(model: torch.nn.Module) -> torch.nn.Module:
    """The classification head: timm's ``get_classifier()``, else the last ``nn.Linear``."""
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if isinstance(head, torch.nn.Module) and any(True for _ in head.parameters()):
        return head
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise InputError(f"{type(model).__name__} has no classifier head to train alone (no get_classifier(), "
                         "no nn.Linear): train it without a frozen phase")
    return linears[-1]


def check_phases(phases: list[Phase]) -> None:
    if not phases:
        raise InputError("training needs at least one phase")
    for p in phases:
        if not isinstance(p.steps, int) or isinstance(p.steps, bool) or p.steps < 0:
            raise InputError(f"{p.name} phase: steps must be an integer >= 0, got {p.steps!r}")
        if not isinstance(p.lr, (int, float)) or not math.isfinite(p.lr) or p.lr <= 0:
            raise InputError(f"{p.name} phase: learning rate must be a number > 0, got {p.lr!r}")
    if sum(p.steps for p in phases) < 1:
        raise InputError("training needs at least 1 optimizer step in total")


def check_splits(train: Split, val: Split, batch_size: int) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 2:
        raise InputError(f"batch size must be an integer >= 2 (BatchNorm needs 2 samples), got {batch_size!r}")
    if len(train) < 2 or len(val) < 1:
        raise DataError(f"training needs >= 2 train and >= 1 val samples, got {len(train)} and {len(val)}")
    if train.images.ndim != 4:
        raise DataError(f"train images must be N×C×H×W, got shape {tuple(train.images.shape)}")
    if train.labels.unique().numel() < 2:
        raise DataError("the train split has samples of only one class: a classifier needs at least two")


def fit_classifier(
    model: torch.nn.Module,
    train: Split,
    val: Split,
    phases: list[Phase],
    *,
    views: Views = identity_views,
    batch_size: int = 64,
    weight_decay: float = 1e-4,
    warmup_fraction: float = 0.05,
    every: int | None = None,
    evaluations: int = 20,
    patience: int | None = 5,
    min_fraction: float = 0.3,
    seed: int = 0,
    keep_start: bool = False,
    desc: str = "train",
    on_eval: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train ``model`` in place (on its own device) through ``phases``; keep the best val checkpoint.

    ``every``: evaluate on val every this many steps (default: the whole budget / ``evaluations``).
    ``keep_start``: the model before training is a candidate too (it is always evaluated, for the curve).
    Returns a :class:`FitResult`; the model is left in eval mode with the selected weights, all
    parameters trainable again.
    """
    check_phases(phases)
    check_splits(train, val, batch_size)
    if patience is not None and (not isinstance(patience, int) or isinstance(patience, bool) or patience < 1):
        raise InputError(f"early-stopping patience must be an integer >= 1 (evaluations) or None, got {patience!r}")
    total = sum(p.steps for p in phases)
    every = max(1, every if every is not None else total // max(1, evaluations))
    device = device_of(model)
    generator = torch.Generator().manual_seed(seed)
    queue: list[torch.Tensor] = []
    bs = min(batch_size, len(train))

    def next_batch() -> torch.Tensor:
        if not queue:
            perm = torch.randperm(len(train), generator=generator)
            queue.extend(perm[sl] for sl in _batch_slices(len(train), bs))
        return queue.pop(0)

    start = time.perf_counter()
    history = [_evaluate(model, val, step=0, phase="start", train_loss=None, lr=0.0, seconds=0.0)]
    kept = {0: _snapshot(model)} if keep_start else {}
    best: dict | None = history[0] if keep_start else None
    if on_eval:
        on_eval(history[0])
    step, diverged, stopped_in = 0, False, []
    try:
        for phase in phases:
            if phase.steps == 0:
                continue
            trainable = _set_trainable(model, phase.frozen_backbone)
            groups = [g for g in _param_groups(model, weight_decay) if g["params"]]
            opt = torch.optim.AdamW(groups, lr=phase.lr)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s, n=phase.steps: lr_factor(s, n, warmup_fraction))
            first, stale = step + 1, 0
            best_loss = min(h["val_loss"] for h in history)
            best_score = max(_score(h) for h in history)
            losses: list[float] = []
            _train_mode(model, trainable)
            for local in track(range(1, phase.steps + 1), f"{desc}: {phase.name} ({phase.steps} steps)",
                               total=phase.steps):
                step += 1
                idx = next_batch()
                b = views(train.images[idx], step_seed(seed, step))
                y = to_device(train.labels[idx], device)
                lam = to_device(b.lam, device)
                with autocast(device):  # bf16 on CUDA; nothing on the CPU
                    logits = model(to_device(b.images, device))
                    per = lam * F.cross_entropy(logits, y, reduction="none")
                    if not bool((lam == 1).all()):
                        per = per + (1 - lam) * F.cross_entropy(logits, y[to_device(b.partner, device)],
                                                                reduction="none")
                    loss = per.mean()
                if not torch.isfinite(loss):
                    warnings.warn(f"{desc}: loss became non-finite at step {step} (learning rate {phase.lr:g} too "
                                  "high?); stopping and keeping the best checkpoint so far", RuntimeWarning, stacklevel=2)
                    step -= 1  # not trained
                    diverged = True
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                if local % every and local != phase.steps:
                    continue
                rec = _evaluate(model, val, step=step, phase=phase.name, train_loss=sum(losses) / len(losses),
                                lr=opt.param_groups[0]["lr"], seconds=time.perf_counter() - start)
                losses = []
                history.append(rec)
                if on_eval:
                    on_eval(rec)
                _train_mode(model, trainable)
                if best is None or _better(rec, best):
                    best = rec
                    kept = {step: _snapshot(model)}
                improved = _score(rec) > best_score or rec["val_loss"] < best_loss * (1 - LOSS_MARGIN)
                best_score, best_loss = max(best_score, _score(rec)), min(best_loss, rec["val_loss"])
                stale = 0 if improved else stale + 1
                if (patience is not None and stale >= patience
                        and step - first + 1 >= math.ceil(min_fraction * phase.steps) and local < phase.steps):
                    stopped_in.append(phase.name)
                    break
            if diverged:
                break
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    if best is None:  # stopped (non-finite loss) before the first evaluation: the last sane state
        best = _evaluate(model, val, step=step, phase=history[-1]["phase"], train_loss=None, lr=0.0,
                         seconds=time.perf_counter() - start)
        history.append(best)
    else:
        model.load_state_dict(kept[best["step"]])
    model.eval()
    return FitResult(best["val_auc"], best["step"], best["phase"], step, total, bool(stopped_in) or diverged, history,
                     stopped_in)


def _score(rec: dict) -> float:
    return rec["val_acc"] if math.isnan(rec["val_auc"]) else rec["val_auc"]


def _better(rec: dict, best: dict) -> bool:
    """Higher val AUC (accuracy when undefined); an equal one with a lower val loss."""
    a, b = _score(rec), _score(best)
    return a > b or (a == b and rec["val_loss"] < best["val_loss"])


def _snapshot(model: torch.nn.Module) -> dict:
    return copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})


def _set_trainable(model: torch.nn.Module, frozen_backbone: bool) -> torch.nn.Module | None:
    """Gradients for every parameter, or only for the head's; returns the head when the backbone is frozen."""
    if not frozen_backbone:
        for p in model.parameters():
            p.requires_grad_(True)
        return None
    head = classifier_of(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)
    return head


def _train_mode(model: torch.nn.Module, head: torch.nn.Module | None) -> None:
    """Train mode for what trains: a frozen backbone stays in eval mode (its BatchNorm statistics fixed)."""
    if head is None:
        model.train()
    else:
        model.eval()
        head.train()


def _evaluate(model: torch.nn.Module, val: Split, *, step: int, phase: str, train_loss: float | None, lr: float,
              seconds: float) -> dict:
    logits = predict_logits(model, val.images)
    return {"step": step, "phase": phase, "train_loss": train_loss,
            "val_loss": float(F.cross_entropy(logits, val.labels)),
            "val_auc": roc_auc(logits.numpy(), val.labels.numpy()),
            "val_acc": float((logits.argmax(1) == val.labels).float().mean()), "lr": float(lr), "seconds": seconds}
