"""Classification: N×K logits, AUC and sensitivity budgets, the clinical report section."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, TeacherError
from .base import Log, Task


class ClassificationTask(Task):
    name = "classification"
    section = "clinical"
    budgets = ("max_auc_drop", "max_sensitivity_drop", "max_robust_drop")
    robustness = True  # the shipping budgets that apply (report "budget_source")
    sample_size = 300

    @property
    def objective(self):
        from ..distill.objective import CLASSIFICATION

        return CLASSIFICATION

    def check_settings(self, cfg) -> None:
        if cfg.max_dice_drop is not None:
            raise InputError("--max-dice-drop is a segmentation budget: use --max-auc-drop for a classifier, or "
                             "--task segmentation")
        if cfg.bench.min_region is not None:
            raise InputError("--min-region is for segmentation (the smallest predicted region kept): drop it, or "
                             "add --task segmentation")

    def load_data(self, cfg, pre, log: Log):
        from ..data import load_dataset

        if str(cfg.teacher).startswith("smp:"):
            raise TeacherError(f"--teacher {cfg.teacher} is a segmentation model: add --task segmentation")
        if cfg.teacher is None and cfg.data is None:
            from ..demo import demo_teacher_and_data

            log("no --teacher/--data: using the embedded demo (synthetic X-ray-like images, not real patients)")
            return demo_teacher_and_data(pre, seed=cfg.seed, max_samples=cfg.max_samples, log=log)
        data = load_dataset(cfg.data, pre, max_samples=cfg.max_samples, seed=cfg.seed, options=cfg.data_options)
        return data, cfg.teacher, cfg.teacher_weights

    def load_teacher(self, spec, weights, cfg, data):
        from ..models import load_teacher

        teacher = load_teacher(spec, weights=weights, trust_checkpoint=cfg.trust_checkpoint,
                               in_chans=data.channels, num_classes=data.num_classes)
        teacher.check(data.channels, data.num_classes, data.image_size)
        return teacher

    def check_student(self, cfg, profile, data) -> None:
        """Build the zoo student once (and load --student-weights into it): bad names and weights fail here."""
        from ..models import create_student, load_student_weights
        from ..prune.derived import FROM_TEACHER

        if cfg.distill.student == FROM_TEACHER:
            if cfg.distill.student_weights is not None:
                raise InputError("--student-weights is for a zoo student; --student from-teacher starts from the "
                                 "teacher's own weights: drop one of the two")
            return
        student = create_student(cfg.distill.student or profile.default_student, data.channels, data.num_classes,
                                 seed=cfg.seed)
        if cfg.distill.student_weights is not None:
            load_student_weights(student, Path(cfg.distill.student_weights), in_chans=data.channels,
                                 num_classes=data.num_classes)

    def choose_student(self, cfg, profile, teacher, example, log: Log):
        """--student when given; else the teacher's own network cut down (measured better than a fresh zoo
        student, benchmarks/README.md) whenever it can be run as a torch module (timm or a trusted
        pickle directly, ONNX / TorchScript / torch.export through onnx2torch) and cut well below the
        teacher's MACs; else, with one line saying why, the target profile's zoo student."""
        from ..prune.derived import (
            FROM_TEACHER,
            REFERENCE_STUDENT,
            derived_base,
            trial_base,
        )

        default = profile.default_student
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

    def create_student(self, name, channels, num_classes, seed) -> torch.nn.Module:
        from ..models import create_student

        return create_student(name, channels, num_classes, seed=seed)

    def evaluate(self, cand, val_logits, val_targets, test_logits, test_targets, cfg, reference, num_classes, seed,
                 rule=None):
        from ..metrics.classification import evaluate_logits

        target = reference.val_sensitivity if reference is not None and reference is not cand.metrics else None
        return evaluate_logits(test_logits, test_targets, val_logits, val_targets,
                               operating_point=cfg.bench.operating_point, target_sensitivity=target,
                               resamples=cfg.bench.bootstrap_resamples, seed=seed)

    def choose(self, cands, profile, teacher, budget):
        from ..ship import choose_shipped, teacher_reference

        return choose_shipped(cands, profile, teacher, budget.max_auc_drop,
                              max_sensitivity_drop=budget.max_sensitivity_drop, max_robust_drop=budget.max_robust_drop,
                              teacher_robustness=teacher_reference(cands).robustness)

    def report_section(self, cands, shipped, ship_info, data, cand_dicts, cfg, work=None) -> dict:
        from ..report.clinical import clinical_section

        clinical = clinical_section(cands, shipped, data.test.labels.numpy(), cand_dicts, cfg.bench.operating_point,
                                    cfg.bench.bootstrap_resamples, cfg.seed, margin=ship_info["max_auc_drop"])
        chosen = ship_info.get("chosen")
        ship_info["non_inferiority"] = clinical["vs_teacher"].get(chosen) if chosen else None
        return clinical

    def sample_arrays(self, split) -> dict[str, np.ndarray]:
        return {"labels": split.labels.numpy().astype(np.int64)}

    def labels_json(self, shipped: dict, data) -> dict:
        """Binary: the P(class 1) threshold chosen on val (the device runner's default); multi-class: argmax."""
        out = {"task": self.name, "class_names": data.class_names, "num_classes": data.num_classes,
               "outputs": "logits, one per class in this order; softmax gives probabilities"}
        if data.num_classes != 2:
            return {**out, "decision": "argmax"}
        m = shipped.get("metrics") or {}
        how = m.get("operating_point")
        return {**out, "positive_class": 1, "decision": "threshold", "threshold": m.get("threshold"),
                "threshold_chosen_on": None if how in (None, "default-0.5") else "val", "operating_point": how}
