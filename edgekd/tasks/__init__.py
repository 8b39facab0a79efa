"""Tasks: what differs between classification and segmentation, said once per task.

The pipeline (:mod:`edgekd.pipeline`) runs the same stages for every task; at each point where the
task matters it asks the run's :class:`~edgekd.tasks.base.Task`:

===========================  ======================================  ==========================================
                             classification                          segmentation
===========================  ======================================  ==========================================
data (``load_data``)         .npz, class folders, the X-ray demo      .npz / folders of images + masks, the
                                                                     synthetic ultrasound demo
teacher (``load_teacher``)   ONNX, TorchScript, torch.export, timm:   the same formats, smp:<Arch>:<encoder>:
                             N×K logits                               N×K×H×W logits
student (``choose_student``) cut from the teacher, else the zoo       the U-Net zoo (``models.segmentation``)
training (``objective``)     :data:`~edgekd.distill.objective.CLASSIFICATION`, :data:`~.SEGMENTATION`
metrics (``evaluate``)       AUC, sensitivity at the val threshold     Dice, IoU (per class, bootstrap CIs), HD95
shipping (``choose``)        val AUC and sensitivity budgets         val Dice budget (``max_dice_drop``)
report (``report_section``)  ``clinical``: ROC, disagreements          ``segmentation``: per-class table, overlays
bundle / runner              labels, threshold                        masks, Dice
===========================  ======================================  ==========================================
"""
from __future__ import annotations

from ..errors import InputError, did_you_mean
from .base import Task

TASKS = ("classification", "segmentation")


def get_task(name: str) -> Task:
    """The task called ``name`` (``--task``); one line naming the choices otherwise."""
    if name == "classification":
        from .classification import ClassificationTask

        return ClassificationTask()
    if name == "segmentation":
        from .segmentation import SegmentationTask

        return SegmentationTask()
    raise InputError(f"unknown task '{name}'{did_you_mean(str(name), TASKS)}: use one of {', '.join(TASKS)}")


__all__ = ["TASKS", "Task", "get_task"]
