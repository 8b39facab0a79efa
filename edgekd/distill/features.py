"""Feature distillation (FitNets hints, Romero et al., ICLR 2015) for torch-runnable teachers.

Besides matching the teacher's logits, the student's last feature map is asked to match the
teacher's through a small learned adapter (a 1×1 convolution from the student's channels to the
teacher's), after both are pooled to the same spatial size and L2-normalised per image. The
adapter exists only during training: the exported student is unchanged. It needs the teacher's
features for exactly the view the student sees, so it runs the teacher online, as a torch module
with timm's ``forward_features`` / ``forward_head`` split.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError


def splits(model: torch.nn.Module) -> bool:
    """Whether ``model`` exposes timm's ``forward_features`` and ``forward_head``."""
    return callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None))


def check_feature_weight(weight: float) -> None:
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0.0 <= weight <= 100.0:
        raise InputError(f"--feature-kd is the weight of the feature-hint loss and must be in [0, 100], got {weight!r}")


def check_feature_kd(weight: float, teacher_module: torch.nn.Module | None) -> None:
    check_feature_weight(weight)
    if weight > 0 and (teacher_module is None or not splits(teacher_module)):
        raise InputError("--feature-kd needs a teacher that runs as a timm torch module (timm:<arch> with "
                         "--teacher-weights): its intermediate features are matched; use logit distillation "
                         "(--feature-kd 0) for this teacher")


class FeatureHint(torch.nn.Module):
    """The adapter and the hint loss between a student's and the teacher's last feature maps."""

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.adapter = torch.nn.Conv2d(student_channels, teacher_channels, 1, bias=False)

    @classmethod
    def between(cls, student: torch.nn.Module, teacher: torch.nn.Module, example: torch.Tensor) -> "FeatureHint":
        if not splits(student):
            raise InputError(f"--feature-kd needs a student with forward_features/forward_head (timm); "
                             f"{type(student).__name__} has none: use --feature-kd 0")
        was = student.training
        student.eval()
        with torch.no_grad():
            s = student.forward_features(example[:2])
            t = teacher.forward_features(example[:2])
        student.train(was)
        if s.ndim != 4 or t.ndim != 4:
            raise InputError("--feature-kd matches 4-D feature maps (N×C×H×W); this student or teacher gives "
                             f"{tuple(s.shape)} / {tuple(t.shape)}: use --feature-kd 0")
        return cls(int(s.shape[1]), int(t.shape[1])).to(example.device)

    def loss(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        s = self.adapter(student_features)
        t = teacher_features.detach().to(s.dtype)
        size = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
        s, t = F.adaptive_avg_pool2d(s, size), F.adaptive_avg_pool2d(t, size)
        s, t = F.normalize(s.flatten(1), dim=1), F.normalize(t.flatten(1), dim=1)
        return (s - t).pow(2).sum(dim=1).mean()
