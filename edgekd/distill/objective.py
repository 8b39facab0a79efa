"""What the training loop needs to know about the task: the KD loss, the val score, the checks.

One training loop (:mod:`edgekd.distill.trainer`) teaches classifiers and segmentation models
alike; what differs is said here, once per task, and chosen from the data set
(:func:`objective_for`: a :class:`~edgekd.data.SegDataset` is segmentation):

=================  ========================================  =========================================
                   classification                            segmentation
=================  ========================================  =========================================
targets            ``split.labels``: N class indices         ``split.masks``: N×H×W class indices
model output       N×K logits                                N×K×H×W logits (same H×W as the input)
KD loss            T²·KL + CE (:func:`~.loss.kd_loss_mixed`)  per pixel T²·KL + CE + Dice
                                                             (:func:`~.seg_loss.seg_kd_loss`)
augmented views    :class:`~.augment.Augmenter` (mixup)      :class:`~.seg_augment.SegAugmenter`: the
                                                             mask moves with the image, no mixup
val score          ROC AUC                                   mean Dice (foreground, per image)
val KL             per image                                 per pixel
head kept whole    the classifier                            the segmentation head
=================  ========================================  =========================================

Checkpoint selection is the same rule for both: lowest val KL to the teacher, with the val score
as a guard (:func:`~.trainer.select_checkpoint`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import DataError, EdgekdError, InputError, TeacherError


class Objective:
    """The task-specific half of the training loop (see the module docstring)."""

    task = ""
    metric = ""  # the val score's name: "auc" | "dice"
    metric_label = ""  # how the log and the report say it: "AUC" | "Dice"
    batch_size = 64  # images per training batch when DistillConfig.batch_size is None
    min_steps = 1500  # the smallest derived distillation budget (edgekd.distill.schedule)
    prune_ratio = 0.8  # the default --prune-ratio (PruneConfig.ratio None): share of the MACs channel pruning removes
    temperature = 4.0  # the default --temperature (DistillConfig.temperature None)
    # depth pruning ranks blocks by harm alone (False) or by harm per MAC saved (True, edgekd.prune.depth): at a
    # classifier's small inputs a layer's dispatch costs more than its arithmetic, so every block saves about as much
    depth_by_cost = False
    # train in channels-last memory format on the CPU (edgekd.distill.trainer); off where it was not measured
    channels_last = False

    def with_defaults(self, cfg):
        """``cfg`` (a DistillConfig) with the settings left to the task (None) filled in."""
        from dataclasses import replace

        return replace(cfg, temperature=self.temperature) if cfg.temperature is None else cfg

    def prune_defaults(self, cfg):
        """``cfg`` (a PruneConfig) with the settings left to the task (None) filled in."""
        from dataclasses import replace

        return replace(cfg, ratio=self.prune_ratio) if cfg.ratio is None else cfg

    def batch_of(self, cfg) -> int:
        """The training batch: ``cfg.batch_size`` when set, else the task's."""
        return int(cfg.batch_size) if cfg.batch_size is not None else self.batch_size

    def targets(self, split) -> torch.Tensor:
        raise NotImplementedError

    def output_shape(self, n: int, k: int, x: torch.Tensor) -> tuple[int, ...]:
        raise NotImplementedError

    def augmenter(self, cfg, data):
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, batch, *, temperature: float, alpha: float) -> torch.Tensor:
        raise NotImplementedError

    def kl(self, student: torch.Tensor, teacher: torch.Tensor) -> float:
        """KL(teacher ‖ student) at T = 1, averaged over images (classification) or pixels (segmentation)."""
        raise NotImplementedError

    def score(self, logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> float:
        raise NotImplementedError

    def head_name(self, model: torch.nn.Module) -> str:
        """The layer that produces the logits: pruning keeps its K outputs."""
        raise NotImplementedError

    def check_targets(self, data) -> None:
        """The data can train and select a model of this task (one clear line otherwise)."""

    def check_outputs(self, out, x: torch.Tensor, k: int, what: str = "the student") -> None:
        expected = self.output_shape(len(x), k, x)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InputError(f"{what} outputs {shape} for a batch of {len(x)}, expected {self.describe_output(k)}: "
                             f"create it with num_classes={k}")

    def check_pruned(self, model: torch.nn.Module, example: torch.Tensor, k: int) -> None:
        x = example.repeat(2, 1, 1, 1)
        with torch.no_grad():
            out = model.eval()(x)
        if tuple(out.shape) != self.output_shape(2, k, x):
            raise EdgekdError(f"pruning changed the model's output to {tuple(out.shape)} (expected "
                              f"{self.output_shape(2, k, x)}): report this model architecture as a bug, or run with "
                              "--prune-ratio 0")

    def describe_output(self, k: int) -> str:
        raise NotImplementedError

    def check_teacher_logits(self, name: str, t: torch.Tensor, n: int, data) -> None:
        expected = (n, data.num_classes, *tuple(data.image_size)) if self.task == "segmentation" else (n, data.num_classes)
        if tuple(t.shape) != expected:
            raise TeacherError(f"teacher logits for {name} have shape {tuple(t.shape)}, expected {expected}: "
                               "recompute them on this dataset (same split, same order)")


class ClassificationObjective(Objective):
    task, metric, metric_label = "classification", "auc", "AUC"

    def targets(self, split) -> torch.Tensor:
        return split.labels

    def output_shape(self, n: int, k: int, x: torch.Tensor) -> tuple[int, ...]:
        return (n, k)

    def describe_output(self, k: int) -> str:
        return f"N×{k} logits"

    def augmenter(self, cfg, data):
        from .augment import Augmenter

        pre = data.preprocessing
        return Augmenter(cfg.augment, mean=tuple(pre.mean), std=tuple(pre.std), channels=data.channels,
                         flips=cfg.flips, mixup=cfg.mixup)

    def loss(self, logits, batch, *, temperature, alpha):
        from .loss import kd_loss_mixed

        dev = logits.device
        return kd_loss_mixed(logits, batch.teacher.to(dev), batch.labels.to(dev), batch.partner_labels.to(dev),
                             batch.lam.to(dev), temperature=temperature, alpha=alpha)

    def kl(self, student, teacher):
        return float(F.kl_div(F.log_softmax(student, 1), F.log_softmax(teacher, 1), reduction="batchmean",
                              log_target=True))

    def score(self, logits, targets, num_classes):
        from ..metrics.classification import roc_auc

        return roc_auc(logits.numpy(), targets.numpy())

    def head_name(self, model):
        get = getattr(model, "get_classifier", None)
        head = get() if callable(get) else None
        if not (isinstance(head, torch.nn.Module) and any(True for _ in head.parameters())):
            layers = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
            if not layers:
                raise InputError(f"cannot prune {type(model).__name__}: it has no Linear or Conv2d layer")
            head = layers[-1]
        return next(n for n, m in model.named_modules() if m is head)

    def check_targets(self, data) -> None:
        if data.train.labels.unique().numel() < 2:
            raise DataError("the train split has samples of only one class: a classifier needs at least two "
                            "(is the split sorted by class and cut with --max-samples?)")
        if data.val.labels.unique().numel() < 2:
            raise DataError("the val split needs samples of at least two classes to compute ROC AUC "
                            "for checkpoint selection: give a larger or stratified val split")


class SegmentationObjective(Objective):
    task, metric, metric_label = "segmentation", "dice", "Dice"
    batch_size = 8  # each image is H·W pixel samples: small batches, more steps
    min_steps = 1000  # 8 000 image views; every one teaches H·W pixels
    # the default --prune-ratio: no channel pruning, only the default depth pruning (half the removable blocks).
    # Measured (benchmarks/README.md, segmentation): channel pruning of the distilled unet-efficientnet_b0 cost
    # 0.06-0.32 val Dice (106 / 79 / 38 M MACs) while its OpenVINO INT8 latency fell only from 2.50 ms (half the
    # blocks gone) to 2.28 / 1.99 / 1.61 ms at 110 / 80 / 60 M MACs (torch fp32 U-Net ResNet-34 teacher: 53 ms);
    # the U-Net's decoder at the full image size is what costs, and it is kept either way.
    prune_ratio = 0.0
    # per-pixel KL at T = 1, as in the dense-prediction distillation literature (Liu et al., "Structured Knowledge
    # Distillation for Semantic Segmentation", CVPR 2019): measured on the synthetic ultrasound set (benchmarks/
    # README.md), unet-efficientnet_b0 reached val Dice 0.799 (T = 1) against 0.794 (T = 4), teacher 0.804. At T = 4
    # a two-class pixel's soft target is close to 0.5 everywhere, and the T²-scaled KL asks the student to match
    # the teacher's logit sizes on confident background rather than its boundaries.
    temperature = 1.0
    # at 128×128 and more a block's arithmetic is what it costs, and a U-Net encoder's blocks differ 2× in MACs
    depth_by_cost = True
    # measured on 2 Zen 4 cores, unet-efficientnet_b0 at 128×128, batch 8: 0.185 s per training step channels-last
    # against 0.270 s in the default layout (depthwise convs and the decoder's full-size maps)
    channels_last = True

    def targets(self, split) -> torch.Tensor:
        return split.masks

    def output_shape(self, n: int, k: int, x: torch.Tensor) -> tuple[int, ...]:
        return (n, k, *x.shape[2:])

    def describe_output(self, k: int) -> str:
        return f"N×{k}×H×W logits of the input's H×W"

    def augmenter(self, cfg, data):
        from .seg_augment import SegAugmenter

        pre = data.preprocessing
        return SegAugmenter(cfg.augment, mean=tuple(pre.mean), std=tuple(pre.std), channels=data.channels,
                            flips=cfg.flips)

    def loss(self, logits, batch, *, temperature, alpha):
        from .seg_loss import seg_kd_loss

        dev = logits.device
        return seg_kd_loss(logits, batch.teacher.to(dev), batch.labels.to(dev), temperature=temperature, alpha=alpha)

    def kl(self, student, teacher):
        pixels = student.shape[0] * student.shape[2] * student.shape[3]
        return float(F.kl_div(F.log_softmax(student, 1), F.log_softmax(teacher, 1), reduction="sum",
                              log_target=True)) / max(1, pixels)

    def score(self, logits, targets, num_classes):
        from ..metrics.segmentation import dice_scores, mean_score

        return mean_score(dice_scores(logits.argmax(1).numpy(), targets.numpy(), num_classes))

    def head_name(self, model):
        """smp models: ``segmentation_head.0``; otherwise the last Conv2d of the model."""
        head = getattr(model, "segmentation_head", None)
        conv = head[0] if isinstance(head, torch.nn.Sequential) and len(head) else head
        if not isinstance(conv, torch.nn.Conv2d):
            convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
            if not convs:
                raise InputError(f"cannot prune {type(model).__name__}: it has no Conv2d layer")
            conv = convs[-1]
        return next(n for n, m in model.named_modules() if m is conv)

    def check_targets(self, data) -> None:
        if not bool((data.val.masks > 0).any()):
            raise DataError("the val split's masks are all background: Dice needs foreground pixels to select a "
                            "checkpoint; give a val split with lesions")


CLASSIFICATION = ClassificationObjective()
SEGMENTATION = SegmentationObjective()


def objective_for(data) -> Objective:
    """The objective of the task the data set is for (its ``task`` attribute)."""
    return SEGMENTATION if getattr(data, "task", "classification") == "segmentation" else CLASSIFICATION
