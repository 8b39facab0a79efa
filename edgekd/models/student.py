"""The student zoo: small timm classifiers that fit edge targets.

Any timm architecture name works as a student; :data:`STUDENTS` lists the ones chosen for edge
devices (few MACs, depthwise or plain convolutions that INT8 runtimes handle well), so that
target profiles and ``--help`` can name them. Students are always built from scratch
(``pretrained=False``): edgekd never downloads weights, and distillation trains them.
:func:`load_student_weights` starts one from a weights file the user gives instead
(``--student-weights``; see :mod:`edgekd.models._weights`).
"""
from __future__ import annotations

import torch

from .._compat import import_timm
from ..errors import InputError, did_you_mean
from ._weights import load_student_weights

__all__ = ["STUDENTS", "create_student", "load_student_weights"]

# name -> one-line note (params are for 1 input channel and 2 classes)
STUDENTS: dict[str, str] = {
    "lcnet_050": "PP-LCNet 0.5x: ~0.6 M params (most in the 1280-wide head), few MACs; fast on ARM CPUs",
    "lcnet_075": "PP-LCNet 0.75x: ~1.1 M params; plain depthwise stack, few MACs",
    "mobilenetv3_small_050": "MobileNetV3-Small 0.5x: ~0.6 M params; default for tight CPU budgets",
    "mobilenetv3_small_075": "MobileNetV3-Small 0.75x: ~1.0 M params",
    "mobilenetv3_small_100": "MobileNetV3-Small 1.0x: ~1.5 M params",
    "mobilenetv3_large_075": "MobileNetV3-Large 0.75x: ~2.7 M params; more accuracy, still mobile-sized",
    "resnet10t": "ResNet-10-T: ~4.9 M params, plain 3x3 convs; INT8-friendly on GPUs/NPUs (TensorRT, DLA)",
    "efficientnet_b0": "EfficientNet-B0: ~4.0 M params; strongest in the zoo, for Jetson-class devices",
}


def create_student(name: str, in_chans: int, num_classes: int, *, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised timm model (seeded, ``pretrained=False``) in train mode.

    ``name`` is a key of :data:`STUDENTS` or any ``timm.list_models()`` name.
    """
    timm = import_timm()
    if not timm.is_model(name):
        hint = did_you_mean(name, STUDENTS) or did_you_mean(name, timm.list_models())
        raise InputError(
            f"unknown student '{name}'{hint}: choose one of {', '.join(STUDENTS)} "
            "(any name from timm.list_models() also works)"
        )
    if in_chans < 1 or num_classes < 2:
        raise InputError(f"a student needs >= 1 input channel and >= 2 classes, got {in_chans} and {num_classes}")
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=num_classes)
    finally:
        torch.random.set_rng_state(state)  # seeding the student must not change the caller's stream
