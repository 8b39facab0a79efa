"""``edgekd train-teacher``: fine-tune a timm architecture on the user's data into a teacher for compress.

Transfer learning in two phases over :func:`edgekd.train.loop.fit_classifier`: the new classifier
head alone on the frozen pretrained backbone, then the whole network at a lower learning rate.
The views are distillation's (:class:`edgekd.distill.augment.Augmenter`, "medical" by default), the
budget is distillation's rule in optimizer steps (:func:`edgekd.distill.schedule.default_steps`:
``max(1500, 12 epochs)`` capped at 10 000) of which :data:`HEAD_SHARE` goes to the head phase when
pretrained weights are given; from scratch there is nothing to keep frozen and every step trains
the whole network. Early stopping and model selection are on val; test is evaluated once, at the
end, on the selected weights.

Pretrained weights come from a local file only (``pretrained=False`` always: nothing is downloaded):
a safetensors file or a ``weights_only`` state_dict, whose first convolution is adapted to the
data's channels and whose classifier is replaced for the data's classes, exactly as for
``--student-weights`` (:func:`edgekd.models.load_student_weights`).

Everything is written into a private folder beside ``--out`` and renamed into place at the end
(:func:`edgekd.stagecache.staging`): a failed run leaves no half-written ``--out``. The folder
holds ``teacher.safetensors``, ``teacher.onnx`` (checked against torch on the test images),
``report.json``, ``report.md`` and ``training_curve.png``.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .._device import resolve_device  # edgekd.train.resolve_device, as before it moved
from ..config import Preprocessing
from ..errors import InputError, did_you_mean

Log = Callable[[str], None]

HEAD_SHARE = 0.10  # of the budget: the head alone on the frozen backbone (pretrained weights only)
HEAD_LR = 1e-3  # peak learning rate of the head phase
FINETUNE_LR = 1e-4  # peak learning rate of the whole network after a pretrained start (10× below the head's)
SCRATCH_LR = 3e-3  # ... and from scratch (the classic recipe's)


@dataclass
class TeacherTrainConfig:
    """Everything one ``edgekd train-teacher`` run needs (written into report.json)."""

    data: Path  # .npz (MedMNIST layout) or an image folder with train/ val/ test/
    arch: str = "resnet50"  # a timm architecture name
    out: Path = Path("teacher")
    weights: Path | None = None  # pretrained weights (safetensors or weights_only state_dict); None: from scratch
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    max_samples: int | None = None  # cap each split (quick runs)
    max_steps: int | None = None  # total optimizer steps; None: distillation's rule on the train-set size
    head_steps: int | None = None  # of them, the frozen-backbone phase; None: HEAD_SHARE with --weights, else 0
    lr: float | None = None  # whole-network peak lr; None: FINETUNE_LR with --weights, SCRATCH_LR without
    head_lr: float = HEAD_LR
    batch_size: int = 64
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    evaluations: int = 20  # val evaluations over the budget
    patience: int = 5  # evaluations without a better val AUC or a lower val loss before stopping
    min_fraction: float = 0.3  # of each phase trained before early stopping may end it
    augment: str = "medical"  # "medical" or "none" (distillation's policies)
    flips: bool = False
    mixup: float = 0.0  # share of batches mixed pairwise (labels mixed alike)
    device: str = "auto"
    seed: int = 0
    overwrite: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["preprocessing"] = self.preprocessing.to_dict()
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


@dataclass
class TeacherTrainResult:
    out: Path
    report: dict


def check_arch(arch: str):
    """The timm module, once ``arch`` is known to it (an unknown name gets a did-you-mean)."""
    from .._compat import import_timm

    timm = import_timm()
    if not arch or not timm.is_model(arch):
        raise InputError(f"unknown timm architecture '{arch}'{did_you_mean(str(arch), timm.list_models())}: "
                         "see timm.list_models()")
    return timm


def check_config(cfg: TeacherTrainConfig) -> None:
    """Every setting, before the data is read or a file written."""
    from ..distill.augment import check_augment
    from ..distill.schedule import check_steps

    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or not 0 <= cfg.seed < 2**32:
        raise InputError(f"--seed must be an integer in [0, 2**32), got {cfg.seed!r}")
    check_steps(cfg.max_steps, "--max-steps", allow_zero=False)
    check_steps(cfg.head_steps, "--head-steps", allow_zero=True)
    if cfg.max_steps is not None and cfg.head_steps is not None and cfg.head_steps > cfg.max_steps:
        raise InputError(f"--head-steps {cfg.head_steps} exceeds --max-steps {cfg.max_steps}: the head phase is "
                         "part of the budget")
    for name, v in (("--lr", cfg.lr), ("--head-lr", cfg.head_lr)):
        if v is not None and (not isinstance(v, (int, float)) or not v > 0 or math.isnan(v)):
            raise InputError(f"{name} must be a number > 0, got {v!r}")
    check_augment(cfg.augment, cfg.mixup)
    check_arch(cfg.arch)
    if cfg.weights is not None and not Path(cfg.weights).expanduser().is_file():
        raise InputError(f"weights file {cfg.weights} does not exist: check --weights (nothing is downloaded; "
                         "give a local .safetensors or state_dict .pt file)")
    resolve_device(cfg.device)


def plan_phases(cfg: TeacherTrainConfig, n_train: int) -> tuple[list, dict]:
    """The phases and the budget's record: distillation's step rule, a head share with pretrained weights."""
    from ..distill.schedule import (
        EPOCHS_EQUIVALENT,
        MAX_STEPS,
        MIN_STEPS,
        default_steps,
    )
    from .loop import Phase

    total = cfg.max_steps if cfg.max_steps is not None else default_steps(n_train, cfg.batch_size)
    pretrained = cfg.weights is not None
    head = cfg.head_steps if cfg.head_steps is not None else (round(HEAD_SHARE * total) if pretrained else 0)
    lr = cfg.lr if cfg.lr is not None else (FINETUNE_LR if pretrained else SCRATCH_LR)
    phases = [Phase("head", int(head), cfg.head_lr, frozen_backbone=True), Phase("full", int(total - head), lr)]
    budget = {"total_steps": int(total), "head_steps": int(head), "full_steps": int(total - head),
              "batch_size": cfg.batch_size, "train_images": n_train,
              "source": "--max-steps" if cfg.max_steps is not None else "derived from the train-set size",
              "rule": f"max({MIN_STEPS}, {EPOCHS_EQUIVALENT} epochs) capped at {MAX_STEPS} (distillation's); "
                      f"head phase {HEAD_SHARE:.0%} of it with --weights, none from scratch",
              "head_lr": cfg.head_lr, "full_lr": lr}
    return phases, budget


def build_model(cfg: TeacherTrainConfig, channels: int, num_classes: int, log: Log) -> tuple[torch.nn.Module, dict]:
    """The timm network for the data (seeded init), with ``--weights`` loaded into it; and what was loaded."""
    from .._io import sha256_file
    from ..models import load_student_weights

    timm = check_arch(cfg.arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        try:
            model = timm.create_model(cfg.arch, pretrained=False, in_chans=channels, num_classes=num_classes)
        except Exception as exc:  # noqa: BLE001 - timm's own message, in one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"timm cannot build {cfg.arch} with {channels} channel(s) and {num_classes} classes: "
                             f"{first}") from None
    if cfg.weights is None:
        log(f"no --weights: training timm:{cfg.arch} from scratch (random initialisation; nothing is downloaded)")
        return model, {"source": "from scratch", "path": None, "sha256": None, "notes": []}
    path = Path(cfg.weights).expanduser()
    info = load_student_weights(model, path, in_chans=channels, num_classes=num_classes, what="teacher weights",
                                option="--weights", role="--arch")
    log(f"weights: {path.name} loaded into timm:{cfg.arch} ({info['matched']} of {info['tensors']} tensors as they are)")
    for note in info["notes"]:
        log(f"  {note}")
    return model, {"source": "file", "path": str(path), "sha256": info.get("sha256") or sha256_file(path),
                   "notes": info["notes"], "adapted": info["adapted"], "reinitialised": info["reinitialised"]}


def train_teacher(cfg: TeacherTrainConfig, log: Log = print) -> TeacherTrainResult:
    """Fine-tune (or train from scratch) ``cfg.arch`` on ``cfg.data`` and write the teacher into ``cfg.out``."""
    from ..data import load_dataset
    from ..distill.augment import Augmenter
    from ..stagecache import staging
    from .loop import fit_classifier

    t0 = time.perf_counter()
    check_config(cfg)
    device = resolve_device(cfg.device)
    with staging(Path(cfg.out), cfg.overwrite) as tmp:
        data = load_dataset(cfg.data, cfg.preprocessing, max_samples=cfg.max_samples, seed=cfg.seed)
        log(f"data: {cfg.data} ({data.format}, {data.channels} channel(s), {data.image_size[0]}×{data.image_size[1]}, "
            f"{data.num_classes} classes; train/val/test {len(data.train)}/{len(data.val)}/{len(data.test)})")
        model, weights = build_model(cfg, data.channels, data.num_classes, log)
        phases, budget = plan_phases(cfg, len(data.train))
        views = Augmenter(cfg.augment, mean=data.preprocessing.mean, std=data.preprocessing.std,
                          channels=data.channels, flips=cfg.flips, mixup=cfg.mixup)
        log(f"training: {budget['total_steps']} steps on {device} ({budget['source']}): head {budget['head_steps']} "
            f"(lr {cfg.head_lr:g}, backbone frozen), whole network {budget['full_steps']} (lr {budget['full_lr']:g})")
        model.to(device)
        t_train = time.perf_counter()
        res = fit_classifier(model, data.train, data.val, phases, views=views, batch_size=cfg.batch_size,
                             weight_decay=cfg.weight_decay, warmup_fraction=cfg.warmup_fraction,
                             evaluations=cfg.evaluations, patience=cfg.patience, min_fraction=cfg.min_fraction,
                             seed=cfg.seed, desc=f"teacher {cfg.arch}")
        train_seconds = time.perf_counter() - t_train
        log(f"training: best val AUC {res.best_val_auc:.4f} at step {res.best_step} ({res.best_phase}); "
            f"{res.steps_run} of {res.steps_planned} steps{' (stopped early)' if res.stopped_early else ''} "
            f"in {train_seconds:.0f} s")
        model.cpu().eval()
        from .outputs import write_outputs

        report = write_outputs(tmp, cfg, data, model, res, weights=weights, budget=budget, phases=phases,
                               augmentation=views.describe(), device=str(device), train_seconds=train_seconds,
                               started=t0, log=log)
    log(f"teacher: {Path(cfg.out) / 'teacher.onnx'} (use it as: edgekd compress --teacher "
        f"{Path(cfg.out) / 'teacher.onnx'} --data {cfg.data})")
    return TeacherTrainResult(Path(cfg.out), report)
