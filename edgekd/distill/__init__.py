"""Knowledge distillation: the KD loss and the training loop shared by every training stage."""
from .loss import kd_loss
from .trainer import DistillResult, TeacherLogits, distill, predict_logits

__all__ = ["DistillResult", "TeacherLogits", "distill", "kd_loss", "predict_logits"]
