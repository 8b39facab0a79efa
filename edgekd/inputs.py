"""Everything a compress run needs, validated before the first file is written.

:func:`resolve_inputs` checks every setting, loads the target profile, the data and the teacher,
checks them against each other (channels, classes, image size) and chooses the student; any bad
input fails here with one line (an :class:`~edgekd.errors.EdgekdError`), before any work.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from .config import CompressConfig
from .data import Dataset
from .errors import InputError
from .targets import TargetProfile, load_target

Log = Callable[[str], None]


@dataclass
class Inputs:
    """Everything validated before the first file is written."""

    profile: TargetProfile
    data: Dataset  # a SegDataset for --task segmentation
    teacher: object  # edgekd.models.Teacher
    threads: int
    example: torch.Tensor  # 1×C×H×W from the test split
    unlabelled: object = None  # edgekd.data.unlabelled.Unlabelled (--unlabelled), or None
    student: str = ""  # the student to distil: a zoo name or "from-teacher" (resolved from --student and the teacher)
    derived_base: torch.nn.Module | None = None  # from-teacher: the teacher's architecture as a prunable module
    task: object = None  # edgekd.tasks.Task (--task): what differs between classification and segmentation
    device: torch.device = torch.device("cpu")  # where training runs (--device, resolved by edgekd._device)
    device_info: dict | None = None  # report.json "training.device": the device, autocast, where the teacher ran


def check_settings(cfg: CompressConfig) -> None:
    """Every stage's settings, checked before any work (a bad --prune-ratio fails in a second, not after distilling)."""
    from .distill.augment import check_augment
    from .distill.schedule import check_steps
    from .distill.source import check_teacher_mode
    from .distill.trainer import _check_args
    from .lower._base import check_threads
    from .prune.pruner import _check_config
    from .quantize.int8 import check_quant_config

    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or not 0 <= cfg.seed < 2**32:
        raise InputError(f"--seed must be an integer in [0, 2**32), got {cfg.seed!r}")
    from ._device import resolve_device

    resolve_device(cfg.device)  # an unknown name, or CUDA where there is none: before any data is read
    check_steps(cfg.distill.max_steps, "--max-steps", allow_zero=False)
    check_steps(cfg.lowrank.finetune_steps, "low-rank fine-tune steps", allow_zero=True)
    if cfg.lowrank.energy is not None:
        from .lowrank import LowRankConfig

        LowRankConfig(energy=cfg.lowrank.energy).check()  # a bad energy fails before any work, not after distillation
    _check_args(cfg.distill, 0, cfg.distill.lr)
    check_augment(cfg.distill.augment, cfg.distill.mixup)
    check_teacher_mode(cfg.distill.teacher_mode, cfg.distill.cached_views)
    from .distill.features import check_feature_weight

    check_feature_weight(cfg.distill.feature_kd)
    _check_config(cfg.prune)
    check_quant_config(cfg.quant)
    if cfg.bench.threads is not None:
        check_threads(cfg.bench.threads)
    from .errors import did_you_mean
    from .metrics.classification import OPERATING_POINTS

    if cfg.bench.operating_point not in OPERATING_POINTS:
        op = cfg.bench.operating_point
        raise InputError(f"unknown operating point '{op}'{did_you_mean(str(op), OPERATING_POINTS)}: "
                         f"use one of {', '.join(OPERATING_POINTS)}")
    ri = cfg.bench.robust_images
    if not isinstance(ri, int) or isinstance(ri, bool) or ri < 0:
        raise InputError(f"robust_images must be an integer >= 0 (0: no robustness evaluation), got {ri!r}")
    mr = cfg.bench.min_region
    if mr is not None and (not isinstance(mr, int) or isinstance(mr, bool) or mr < 0):
        raise InputError(f"--min-region must be an integer >= 0 (pixels; 0: keep every region), got {mr!r}")
    for name in ("warmup", "iterations"):
        v = getattr(cfg.bench, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "warmup" else 1):
            raise InputError(f"--{name} must be an integer >= {0 if name == 'warmup' else 1}, got {v!r}")


def resolve_inputs(cfg: CompressConfig, log: Log) -> Inputs:
    """Target, data and teacher, all checked against each other; raises EdgekdError on bad input."""
    from .tasks import get_task

    task = get_task(cfg.task)
    check_settings(task.with_defaults(cfg))  # the settings as the stages will see them
    task.check_settings(cfg)
    profile = load_target(cfg.target)
    budget = task.budget(profile, cfg)  # bad budgets fail before any work
    if cfg.search.budget is not None:
        from .pipeline.search import check_search

        check_search(cfg, profile)
    if budget.max_robust_drop is not None and cfg.bench.robust_images == 0:
        raise InputError("max_robust_drop needs the robustness evaluation, which bench.robust_images = 0 turns off: "
                         "set robust_images > 0 or drop the budget")
    pre = cfg.preprocessing
    if pre.image_size is None and profile.input_size is not None:
        pre = replace(pre, image_size=profile.input_size)
    if (cfg.teacher is None) != (cfg.data is None):
        missing = "--teacher" if cfg.teacher is None else "--data"
        raise InputError(f"{missing} is missing: give both --teacher and --data, or neither to run the embedded demo")
    if cfg.teacher_weights is not None and not Path(cfg.teacher_weights).exists():
        raise InputError(f"teacher weights {cfg.teacher_weights} do not exist")
    data, spec, weights = task.load_data(cfg, pre, log)
    _say_if_streamed(data, log)
    task.check_student(cfg, profile, data)  # an unknown student or bad weights fail before any work
    unlabelled = None
    if cfg.unlabelled is not None:
        from .data.unlabelled import load_unlabelled

        unlabelled = load_unlabelled(Path(cfg.unlabelled), data.preprocessing, channels=data.channels,
                                     image_size=tuple(data.image_size))
        log(f"unlabelled: {unlabelled.count} images from {cfg.unlabelled} (soft targets only)")
    teacher = task.load_teacher(spec, weights, cfg, data)
    if cfg.distill.feature_kd:
        from .distill.features import check_feature_kd

        check_feature_kd(cfg.distill.feature_kd, teacher.module)
    example = data.test.images[:1].clone()
    name, base = task.choose_student(cfg, profile, teacher, example, log)
    # the profile's thread count is the device's; the host never oversubscribes its own cores
    threads = cfg.bench.threads or min(profile.threads, os.cpu_count() or 1)
    device, device_info = training_device(cfg, teacher, example, log)
    return Inputs(profile, data, teacher, threads, example, unlabelled, name, base, task, device, device_info)


def training_device(cfg: CompressConfig, teacher, example: torch.Tensor, log: Log) -> tuple[torch.device, dict]:
    """The device training runs on (--device), the teacher moved there when it can be; said in one log line."""
    from . import _dist
    from ._device import describe, resolve_device

    device = _dist.training_device(resolve_device(cfg.device))  # under torchrun: each process on its own GPU
    world = _dist.setup(device)  # joins torchrun's process group (nothing with one process)
    info = describe(device)
    why = teacher.run_on(device, example)
    info["teacher"] = str(teacher.device)
    if why:
        info["teacher_note"] = why
    info.update(world.describe())
    if world.distributed:
        log(f"training: {world.size} processes ({world.backend}, DistributedDataParallel); rank 0 evaluates, lowers, "
            "measures and writes")
    if device.type == "cpu":
        log(f"training: on the CPU (--device {cfg.device})")
    else:
        log(f"training: on {info['device']} ({info['name']}, {info['autocast']} autocast in training forward passes; "
            f"teacher logits in float32 on {info['teacher']}{': ' + why if why else ''}); export, lowering and "
            "the benchmark on the CPU")
    return device, info


def _say_if_streamed(data, log) -> None:
    """One line when the train split is read from disk (:mod:`edgekd.data.lazy`): a run that costs more CPU says why."""
    from .data.lazy import STREAM_ENV, LazyRows

    images = data.train.images
    if isinstance(images, LazyRows):
        size = images.numel() * 4 / 2**30
        why = f"{STREAM_ENV}=1" if os.environ.get(STREAM_ENV, "").strip() == "1" else "over 1 GiB"
        log(f"data: the train split ({len(images)} images, {size:.2f} GiB as float32) is read from disk and "
            f"preprocessed per batch ({why}; {STREAM_ENV}=0 holds it in memory)")
