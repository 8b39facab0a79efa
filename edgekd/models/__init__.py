"""Models: teacher loaders (ONNX, TorchScript, torch.export, timm + weights), the student zoo,
saving weights, and parameter / MAC counts. Training a classifier is :mod:`edgekd.train`."""
from .save import save_weights
from .stats import count_macs, count_params
from .student import STUDENTS, create_student, load_student_weights
from .teacher import Teacher, load_teacher

__all__ = [
    "STUDENTS",
    "Teacher",
    "count_macs",
    "count_params",
    "create_student",
    "load_student_weights",
    "load_teacher",
    "save_weights",
]
