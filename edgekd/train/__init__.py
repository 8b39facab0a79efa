"""Supervised training of classifiers: the one loop, the classic teacher recipe, ``edgekd train-teacher``.

Above :mod:`edgekd.distill` (whose views, step budget and schedule it shares) and :mod:`edgekd.models`;
the demo and the benchmark suites train their teachers here too.
"""
from .classic import random_shift, train_classifier
from .loop import FitResult, Phase, fit_classifier
from .teacher import (
    TeacherTrainConfig,
    TeacherTrainResult,
    resolve_device,
    train_teacher,
)

__all__ = ["FitResult", "Phase", "TeacherTrainConfig", "TeacherTrainResult", "fit_classifier", "random_shift",
           "resolve_device", "train_classifier", "train_teacher"]
