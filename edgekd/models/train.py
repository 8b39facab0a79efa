"""Plain supervised training of a classifier, and saving its weights.

Used to train the demo teacher (embedded synthetic data) and the benchmark's ResNet-18 teacher
on PneumoniaMNIST; distillation of students lives in :mod:`edgekd.distill`. Kept deliberately
simple: cross-entropy, AdamW with a per-step cosine schedule, random shifts (crop of a
replicate-padded image) as the only augmentation, and the weights of the epoch with the best
validation AUC are the ones returned. The same seed gives the same weights on the same machine.
"""
from __future__ import annotations

import copy
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .._progress import track
from ..data._base import Split
from ..errors import InputError
from ..metrics.classification import roc_auc
from .predict import predict_logits


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by its own random (dy, dx) in [-max_shift, max_shift] (edges replicated)."""
    if max_shift <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (max_shift, max_shift, max_shift, max_shift), mode="replicate")
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # B×1×H×1
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # B×1×1×W
    bi = torch.arange(b)[:, None, None, None]
    ci = torch.arange(c)[None, :, None, None]
    return padded[bi, ci, rows, cols]


def _shift_for(size: int) -> int:
    """±4 px, less for tiny images (28×28 MedMNIST gets ±3)."""
    return max(1, min(4, size // 8))


def _validate(model: torch.nn.Module, val: Split) -> dict[str, float]:
    logits = predict_logits(model, val.images)
    loss = float(F.cross_entropy(logits, val.labels))
    auc = roc_auc(logits.numpy(), val.labels.numpy())
    acc = float((logits.argmax(1) == val.labels).float().mean())
    return {"val_loss": loss, "val_auc": auc, "val_acc": acc}


def _check_inputs(train: Split, val: Split, epochs: int, batch_size: int, lr: float) -> None:
    if epochs < 1:
        raise InputError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 2:
        raise InputError(f"batch_size must be >= 2 (BatchNorm needs 2 samples), got {batch_size}")
    if not lr > 0:
        raise InputError(f"learning rate must be > 0, got {lr}")
    if len(train) < 2 or len(val) < 1:
        raise InputError(f"training needs >= 2 train and >= 1 val samples, got {len(train)} and {len(val)}")
    if train.images.ndim != 4:
        raise InputError(f"train images must be N×C×H×W, got shape {tuple(train.images.shape)}")


def train_classifier(
    model: torch.nn.Module,
    train: Split,
    val: Split,
    *,
    epochs: int,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    desc: str = "train teacher",
) -> dict:
    """Train ``model`` in place with cross-entropy; keep the weights of the best val-AUC epoch.

    Returns ``{"best_val_auc", "best_epoch", "epochs", "history"}``; ``history`` has one dict per
    epoch (train_loss, val_loss, val_auc, val_acc, lr). When val AUC is undefined (one class in
    val) epochs are ranked by val accuracy instead. The model is left in eval mode.
    """
    _check_inputs(train, val, epochs, batch_size, lr)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n = len(train)
    steps_per_epoch = max(1, n // batch_size if n % batch_size == 1 else math.ceil(n / batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    shift = _shift_for(int(min(train.images.shape[-2:])))
    best_score, best_state, best_epoch = -math.inf, None, 0
    history: list[dict] = []
    for epoch in track(range(1, epochs + 1), desc, total=epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        losses = []
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            x = random_shift(train.images[idx], shift, gen)
            loss = F.cross_entropy(model(x), train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), **_validate(model, val),
                  "lr": float(opt.param_groups[0]["lr"])}
        history.append(record)
        score = record["val_auc"] if not math.isnan(record["val_auc"]) else record["val_acc"]
        if score > best_score:
            best_score, best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    best_auc = history[best_epoch - 1]["val_auc"] if best_epoch else float("nan")
    return {"best_val_auc": best_auc, "best_epoch": best_epoch, "epochs": epochs, "history": history}


def save_weights(model: torch.nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write the model's state_dict as safetensors (contiguous CPU copies), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
