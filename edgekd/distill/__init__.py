"""Knowledge distillation: the KD loss, consistent augmented views, step budgets and the training loop."""
from .loss import kd_loss, kd_loss_mixed
from .schedule import Budget, plan
from .source import Pool, TeacherSignal
from .trainer import DistillResult, distill, predict_logits

__all__ = ["Budget", "DistillResult", "Pool", "TeacherSignal", "distill", "kd_loss", "kd_loss_mixed", "plan",
           "predict_logits"]
