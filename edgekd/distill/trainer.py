"""Distillation training loop, shared by the distill, prune (fine-tune) and QAT stages.

One loop trains a student against cached teacher logits: AdamW, a cosine learning-rate
schedule, seeded shuffling, validation ROC AUC after every epoch, early stopping, and the best
epoch's weights restored at the end. The same loop fine-tunes a pruned student and an
NNCF-quantized one (quantization-aware training): it only needs ``forward``, ``parameters`` and
``state_dict``/``load_state_dict``, which NNCF's quantized torch models keep.
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from .._progress import track
from ..bench.metrics import roc_auc
from ..config import DistillConfig
from ..data._base import Dataset
from ..errors import DataError, InputError, TeacherError
from .loss import check_kd_params, kd_loss
from .views import apply_view, check_views


@dataclass
class TeacherLogits:
    """Teacher outputs computed once by the pipeline, row-aligned with the dataset's splits."""

    train: torch.Tensor  # N_train×K float32, aligned with data.train
    val: torch.Tensor  # N_val×K, aligned with data.val
    views: tuple[str, ...] = ("identity",)  # augmentation views (edgekd.distill.views), identity first
    train_views: torch.Tensor | None = None  # V×N_train×K: the teacher on each view; None: identity only

    @classmethod
    def compute(cls, teacher: Callable[[torch.Tensor], torch.Tensor], data: Dataset,
                views: tuple[str, ...] = ("identity",)) -> "TeacherLogits":
        """Run the teacher once on val and on every view of train."""
        views = check_views(tuple(views))
        per_view = [teacher(apply_view(data.train.images, v)) for v in views]
        return cls(per_view[0], teacher(data.val.images), views,
                   torch.stack(per_view) if len(views) > 1 else None)


@dataclass
class DistillResult:
    model: torch.nn.Module  # the best epoch's weights, in eval mode
    best_val_auc: float  # val AUC of the returned model
    epochs_run: int  # epochs trained (fewer than asked when early stopping fired)
    history: list[dict]  # per epoch: {"epoch", "loss", "val_auc", "seconds"}
    initial_val_auc: float = float("nan")  # val AUC before training (the start is a candidate too)


def predict_logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """N×K logits of ``model`` in eval mode, in batches; the model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    device = _device_of(model)
    outs = []
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                outs.append(model(images[start : start + batch_size].to(device)).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0, 0)


def distill(
    student: torch.nn.Module,
    data: Dataset,
    teacher_logits: TeacherLogits,
    cfg: DistillConfig,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    patience: int | None = None,
    seed: int = 0,
    desc: str = "distill",
) -> DistillResult:
    """Train ``student`` in place on ``data.train`` against the teacher's cached logits.

    Augmentation only through the views whose teacher logits were computed once
    (``teacher_logits.views``, see :mod:`edgekd.distill.views`): each batch draws one view, so
    every image is always paired with the teacher's soft target for exactly that image.
    ``epochs``, ``lr`` and ``patience`` override the config (the prune and QAT stages use them).
    The model before training counts as a candidate, so the result is never worse on val than
    the start; early stopping fires after ``patience`` epochs without a strictly better val AUC.
    """
    epochs = cfg.epochs if epochs is None else epochs
    lr = cfg.lr if lr is None else lr
    patience = cfg.patience if patience is None else patience
    _check_args(cfg, epochs, lr, patience)
    _check_data(data, teacher_logits)
    device = _device_of(student)
    train_x, train_y = data.train.images, data.train.labels.long()
    train_t = teacher_logits.train.float()
    _check_student_outputs(student, train_x[:2].to(device), data.num_classes)

    best_auc = _val_auc(student, data, cfg.batch_size)
    initial_auc = best_auc
    best_state = copy.deepcopy(student.state_dict())
    history: list[dict] = []
    if epochs == 0:
        student.eval()
        return DistillResult(student, best_auc, 0, history, initial_auc)

    optimizer = torch.optim.AdamW(_param_groups(student, cfg.weight_decay), lr=lr)
    batches_per_epoch = len(_batch_slices(len(train_y), cfg.batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * batches_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    stale = 0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(len(train_y), generator=generator)
        batches = [order[sl] for sl in _batch_slices(len(train_y), cfg.batch_size)]
        student.train()
        total, finite = 0.0, True
        for idx in track(batches, f"{desc} epoch {epoch}/{epochs}"):
            x, t = train_x[idx], train_t[idx]
            if teacher_logits.train_views is not None:
                v = int(torch.randint(len(teacher_logits.views), (1,), generator=generator))
                x, t = apply_view(x, teacher_logits.views[v]), teacher_logits.train_views[v][idx].float()
            logits = student(x.to(device))
            loss = kd_loss(logits, t.to(device), train_y[idx].to(device),
                           temperature=cfg.temperature, alpha=cfg.alpha)
            if not torch.isfinite(loss):
                finite = False
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(idx)
        if not finite:
            warnings.warn(f"{desc}: loss became non-finite in epoch {epoch} (learning rate {lr:g} too high?); "
                          "stopping and keeping the best epoch so far", RuntimeWarning, stacklevel=2)
            break
        auc = _val_auc(student, data, cfg.batch_size)
        history.append({"epoch": epoch, "loss": total / len(train_y), "val_auc": auc,
                        "seconds": time.perf_counter() - start})
        if auc > best_auc:
            best_auc, stale = auc, 0
            best_state = copy.deepcopy(student.state_dict())
        else:
            stale += 1
            if stale >= patience:
                break
    student.load_state_dict(best_state)
    student.eval()
    return DistillResult(student, best_auc, len(history), history, initial_auc)


def _val_auc(model: torch.nn.Module, data: Dataset, batch_size: int) -> float:
    logits = predict_logits(model, data.val.images, max(batch_size, 256))
    return roc_auc(logits.numpy(), data.val.labels.numpy())


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


def _device_of(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _check_args(cfg: DistillConfig, epochs: int, lr: float, patience: int) -> None:
    check_kd_params(cfg.temperature, cfg.alpha)
    if not isinstance(epochs, int) or epochs < 0:
        raise InputError(f"distillation epochs must be an integer >= 0, got {epochs!r}")
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr < 0:
        raise InputError(f"learning rate must be a number >= 0, got {lr!r}: try 3e-3 (1e-4 for QAT)")
    if not isinstance(patience, int) or patience < 1:
        raise InputError(f"early-stopping patience must be an integer >= 1, got {patience!r}")
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise InputError(f"batch size must be an integer >= 1, got {cfg.batch_size!r}")
    if not isinstance(cfg.weight_decay, (int, float)) or cfg.weight_decay < 0:
        raise InputError(f"weight decay must be >= 0, got {cfg.weight_decay!r}")


def _check_data(data: Dataset, teacher: TeacherLogits) -> None:
    n_train, n_val, k = len(data.train), len(data.val), data.num_classes
    if n_train < 2:
        raise DataError(f"the train split has {n_train} sample(s); distillation needs at least 2")
    if data.train.labels.unique().numel() < 2:
        raise DataError("the train split has samples of only one class: a classifier needs at least two "
                        "(is the split sorted by class and cut with --max-samples?)")
    if data.val.labels.unique().numel() < 2:
        raise DataError("the val split needs samples of at least two classes to compute ROC AUC "
                        "for early stopping: give a larger or stratified val split")
    for name, t, n in (("train", teacher.train, n_train), ("val", teacher.val, n_val)):
        if tuple(t.shape) != (n, k):
            raise TeacherError(f"teacher logits for {name} have shape {tuple(t.shape)}, expected ({n}, {k}): "
                               "recompute them on this dataset (same split, same order)")


def _check_student_outputs(student: torch.nn.Module, x: torch.Tensor, k: int) -> None:
    was_training = student.training
    student.eval()
    with torch.no_grad():
        out = student(x)
    student.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != k:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"the student outputs {shape} for a batch of {len(x)}, expected N×{k} logits: "
                         f"create it with num_classes={k}")
