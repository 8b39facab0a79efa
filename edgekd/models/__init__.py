"""Models: teacher loaders (ONNX, TorchScript, torch.export, timm + weights), the student zoo,
plain classifier training, and parameter / MAC counts."""
from .stats import count_macs, count_params
from .student import STUDENTS, create_student, load_student_weights
from .teacher import Teacher, load_teacher
from .train import save_weights, train_classifier

__all__ = [
    "STUDENTS",
    "Teacher",
    "count_macs",
    "count_params",
    "create_student",
    "load_student_weights",
    "load_teacher",
    "save_weights",
    "train_classifier",
]
