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
from .data import Dataset, load_dataset
from .errors import InputError, TeacherError
from .targets import TargetProfile, load_target, shipping_budget

Log = Callable[[str], None]


@dataclass
class Inputs:
    """Everything validated before the first file is written."""

    profile: TargetProfile
    data: Dataset
    teacher: object  # edgekd.models.Teacher
    threads: int
    example: torch.Tensor  # 1×C×H×W from the test split
    unlabelled: object = None  # edgekd.data.unlabelled.Unlabelled (--unlabelled), or None
    student: str = ""  # the student to distil: a zoo name or "from-teacher" (resolved from --student and the teacher)
    derived_base: torch.nn.Module | None = None  # from-teacher: the teacher's architecture as a prunable module


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
    check_steps(cfg.distill.max_steps, "--max-steps", allow_zero=False)
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
    for name in ("warmup", "iterations"):
        v = getattr(cfg.bench, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "warmup" else 1):
            raise InputError(f"--{name} must be an integer >= {0 if name == 'warmup' else 1}, got {v!r}")


def resolve_inputs(cfg: CompressConfig, log: Log) -> Inputs:
    """Target, data and teacher, all checked against each other; raises EdgekdError on bad input."""
    from .models import load_teacher

    check_settings(cfg)
    profile = load_target(cfg.target)
    budget = shipping_budget(profile, cfg.max_auc_drop, cfg.max_sensitivity_drop, cfg.max_robust_drop)  # fail early
    if budget.max_robust_drop is not None and cfg.bench.robust_images == 0:
        raise InputError("max_robust_drop needs the robustness evaluation, which bench.robust_images = 0 turns off: "
                         "set robust_images > 0 or drop the budget")
    pre = cfg.preprocessing
    if pre.image_size is None and profile.input_size is not None:
        pre = replace(pre, image_size=profile.input_size)
    if cfg.teacher is None and cfg.data is None:
        from .demo import demo_teacher_and_data

        log("no --teacher/--data: using the embedded demo (synthetic X-ray-like images, not real patients)")
        data, spec, weights = demo_teacher_and_data(pre, seed=cfg.seed, max_samples=cfg.max_samples, log=log)
    elif cfg.teacher is None or cfg.data is None:
        missing = "--teacher" if cfg.teacher is None else "--data"
        raise InputError(f"{missing} is missing: give both --teacher and --data, or neither to run the embedded demo")
    else:
        if cfg.teacher_weights is not None and not Path(cfg.teacher_weights).exists():
            raise InputError(f"teacher weights {cfg.teacher_weights} do not exist")
        data = load_dataset(cfg.data, pre, max_samples=cfg.max_samples, seed=cfg.seed)
        spec, weights = cfg.teacher, cfg.teacher_weights
    from .prune.derived import FROM_TEACHER

    if cfg.distill.student == FROM_TEACHER and cfg.distill.student_weights is not None:
        raise InputError("--student-weights is for a zoo student; --student from-teacher starts from the teacher's "
                         "own weights: drop one of the two")
    if cfg.distill.student != FROM_TEACHER:
        check_zoo_student(cfg, profile.default_student, data)  # an unknown student or bad weights fail before any work
    unlabelled = None
    if cfg.unlabelled is not None:
        from .data.unlabelled import load_unlabelled

        unlabelled = load_unlabelled(Path(cfg.unlabelled), data.preprocessing, channels=data.channels,
                                     image_size=tuple(data.image_size))
        log(f"unlabelled: {unlabelled.count} images from {cfg.unlabelled} (soft targets only)")
    teacher = load_teacher(
        spec, weights=weights, trust_checkpoint=cfg.trust_checkpoint,
        in_chans=data.channels, num_classes=data.num_classes,
    )
    teacher.check(data.channels, data.num_classes, data.image_size)
    if cfg.distill.feature_kd:
        from .distill.features import check_feature_kd

        check_feature_kd(cfg.distill.feature_kd, teacher.module)
    example = data.test.images[:1].clone()
    name, base = choose_student(cfg, profile.default_student, teacher, example, log)
    # the profile's thread count is the device's; the host never oversubscribes its own cores
    threads = cfg.bench.threads or min(profile.threads, os.cpu_count() or 1)
    return Inputs(profile, data, teacher, threads, example, unlabelled, name, base)


def check_zoo_student(cfg: CompressConfig, default: str, data: Dataset) -> None:
    """Build the zoo student once (and load --student-weights into it): bad names and weights fail here."""
    from .models import create_student, load_student_weights

    student = create_student(cfg.distill.student or default, data.channels, data.num_classes, seed=cfg.seed)
    if cfg.distill.student_weights is not None:
        load_student_weights(student, Path(cfg.distill.student_weights), in_chans=data.channels,
                             num_classes=data.num_classes)


def choose_student(cfg: CompressConfig, default: str, teacher, example: torch.Tensor, log: Log
                   ) -> tuple[str, torch.nn.Module | None]:
    """The student to distil, and for ``from-teacher`` the teacher's network as a prunable module.

    --student when given; else the teacher's own network cut down (measured better than a fresh zoo
    student, benchmarks/README.md) whenever it can be run as a torch module (timm or a trusted
    pickle directly, ONNX / TorchScript / torch.export through onnx2torch) and cut to about the
    zoo student's MACs; else, with one line saying why, the target profile's zoo student.
    """
    from .prune.derived import FROM_TEACHER, REFERENCE_STUDENT, derived_base, trial_base

    if cfg.distill.student == FROM_TEACHER:
        return FROM_TEACHER, derived_base(teacher, example)  # an unconvertible teacher fails here, in one line
    if cfg.distill.student is not None or cfg.distill.student_weights is not None:
        return cfg.distill.student or default, None
    torch_module = teacher.format in ("timm", "pickle") and teacher.module is not None
    if torch_module or teacher.format in ("onnx", "torchscript", "torch.export"):
        ref = default if default != FROM_TEACHER else REFERENCE_STUDENT
        try:
            return FROM_TEACHER, trial_base(teacher, example, ref)
        except TeacherError as exc:
            log(f"student: {exc}; distilling the zoo student {default} instead (--student {default} "
                "silences this)")
    return default, None
