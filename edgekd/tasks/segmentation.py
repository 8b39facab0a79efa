"""Segmentation: N×K×H×W logits, masks, Dice/IoU/HD95, the ``max_dice_drop`` budget, overlays in the report."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError, TeacherError
from .base import Log, Task

OVERLAYS = 6  # worst test cases of the shipped student shown in the report (image, truth, teacher, student)


@dataclass
class SegScores:
    """A segmentation candidate's figures: Dice on val (the choice), Dice/IoU/HD95 on test (the confirmation)."""

    val_dice: float  # mean foreground Dice over val images
    test: object  # edgekd.metrics.segmentation.SegMetrics on test (bootstrap CIs, HD95)
    vs_teacher: dict | None = None  # paired test Dice difference to the teacher reference, with its CI
    per_image_dice: np.ndarray | None = field(default=None, repr=False)  # test, mean over foreground classes
    test_pred: np.ndarray | None = field(default=None, repr=False)  # test argmax masks (uint8), kept in memory
    val_dice_present: float | None = None  # val Dice over the images whose truth holds the class
    val_false_alarms: int | None = None  # val images whose truth lacks a foreground class the model marks (summed)
    val_images_without: int | None = None  # val (image, foreground class) pairs whose truth lacks the class
    decision: dict | None = None  # the small-region rule for this model: derived, applied (on val's say), val Dice

    @property
    def dice(self) -> float:
        return float(self.test.mean_dice)

    def to_dict(self) -> dict:
        t = self.test.to_dict()
        return {"dice": t["mean_dice"], "dice_ci": t["dice_ci"], "iou": t["mean_iou"], "iou_ci": t["iou_ci"],
                "hd95": t["mean_hd95"], "hd95_ci": t["hd95_ci"], "val_dice": self.val_dice,
                "dice_present": t["mean_dice_present"], "false_alarms": _foreground_sum(t["false_alarms"]),
                "images_without": _foreground_sum(t["images_without"]), "val_dice_present": self.val_dice_present,
                "val_false_alarms": self.val_false_alarms, "val_images_without": self.val_images_without,
                "per_class": {"dice": t["dice"], "iou": t["iou"], "hd95": t["hd95"],
                              "hd95_undefined": t["hd95_undefined"], "dice_present": t["dice_present"],
                              "false_alarms": t["false_alarms"], "images_without": t["images_without"]},
                "n_images": t["n_images"], "vs_teacher": self.vs_teacher, "decision": self.decision}

    @property
    def min_region(self) -> list[int] | None:
        """The smallest region kept per class when this model's decision clears small ones, else None."""
        d = self.decision or {}
        return d.get("min_region") if d.get("applied") else None


def _foreground_sum(per_class: list[int] | None) -> int | None:
    return None if per_class is None else int(sum(per_class[1:]))


def _per_image(dice: np.ndarray) -> np.ndarray:
    """Each image's mean Dice over the foreground classes defined on it (NaN: none is, nothing to find)."""
    fg = dice[:, 1:]
    n = (~np.isnan(fg)).sum(axis=1)
    return np.where(n > 0, np.nansum(fg, axis=1) / np.maximum(n, 1), np.nan)


class SegmentationTask(Task):
    name = "segmentation"
    section = "segmentation"
    budgets = ("max_dice_drop",)
    robustness = True  # scored under shift by mean Dice; reported, not yet a shipping budget (--max-robust-drop refused)
    robust_metric = "dice"
    # each image is H·W scored pixels and a drop is paired (the same images clean and shifted), so fewer images
    # than a classifier's 512 do; the teacher's 25 passes over them were most of the time: measured on the
    # segmentation benchmark (U-Net ResNet-34 at 128×128), 200 val + 200 test images took 274 s of a 1707-s run
    robust_images = 64
    sample_size = 64  # per-pixel logits: 64 images of 128×128×2 are 8 MB of expected outputs

    @property
    def objective(self):
        from ..distill.objective import SEGMENTATION

        return SEGMENTATION

    def check_settings(self, cfg) -> None:
        d = cfg.distill
        if d.feature_kd:
            raise InputError("--feature-kd is for classifiers (timm teachers); segmentation distils per-pixel logits: "
                             "drop --feature-kd")
        if d.student == "from-teacher":
            raise InputError("--student from-teacher is for classifiers; segmentation students come from the U-Net "
                             "zoo: drop --student or pick one (see edgekd.models.segmentation.SEG_STUDENTS)")
        if cfg.unlabelled is not None:
            raise InputError("--unlabelled is not supported with --task segmentation yet: drop it")
        for flag, v in (("--max-auc-drop", cfg.max_auc_drop), ("--max-sensitivity-drop", cfg.max_sensitivity_drop)):
            if v is not None:
                raise InputError(f"{flag} is a classification budget: use --max-dice-drop with --task segmentation")
        if cfg.max_robust_drop is not None:
            raise InputError("--max-robust-drop is not applied to segmentation yet (the robustness step reports "
                             "Dice under shift but does not gate shipping): drop it")
        from ..config import DistillConfig

        if d.mixup != DistillConfig().mixup:  # the default is the classifier's; any other value was asked for
            raise InputError("--mixup is for classifiers (a blend of two hard masks is not a mask): drop it")

    def load_data(self, cfg, pre, log: Log):
        from ..data.segmentation import load_segmentation

        if cfg.teacher is None and cfg.data is None:
            from ..demo import demo_seg_teacher_and_data

            log("no --teacher/--data: using the embedded segmentation demo (SYNTHETIC ultrasound-like images with "
                "lesion masks, not real patients)")
            return demo_seg_teacher_and_data(pre, seed=cfg.seed, max_samples=cfg.max_samples, log=log)
        data = load_segmentation(cfg.data, pre, max_samples=cfg.max_samples, seed=cfg.seed)
        return data, cfg.teacher, cfg.teacher_weights

    def load_teacher(self, spec, weights, cfg, data):
        from ..models import load_teacher
        from ..models.segmentation import check_seg_teacher, load_seg_teacher

        if str(spec).startswith("smp:"):
            teacher = load_seg_teacher(spec, weights, in_chans=data.channels, num_classes=data.num_classes,
                                       trust_checkpoint=cfg.trust_checkpoint)
        elif str(spec).startswith("timm:"):
            raise TeacherError(f"--teacher {spec} is a classifier: a segmentation teacher is smp:<Arch>:<encoder> "
                               "with --teacher-weights, or an ONNX / TorchScript / torch.export file")
        else:
            teacher = load_teacher(spec, weights=weights, trust_checkpoint=cfg.trust_checkpoint,
                                   in_chans=data.channels, num_classes=data.num_classes)
        check_seg_teacher(teacher, data.channels, data.num_classes, tuple(data.image_size))
        return teacher

    def check_student(self, cfg, profile, data) -> None:
        from ..models import load_student_weights

        student = self.create_student(cfg.distill.student or self.default_student(), data.channels,
                                      data.num_classes, cfg.seed)
        if cfg.distill.student_weights is not None:
            from pathlib import Path

            load_student_weights(student, Path(cfg.distill.student_weights), in_chans=data.channels,
                                 num_classes=data.num_classes)

    @staticmethod
    def default_student() -> str:
        from ..models.segmentation import DEFAULT_SEG_STUDENT

        return DEFAULT_SEG_STUDENT

    def choose_student(self, cfg, profile, teacher, example, log: Log):
        return cfg.distill.student or self.default_student(), None

    def create_student(self, name, channels, num_classes, seed) -> torch.nn.Module:
        from ..models.segmentation import create_seg_student

        return create_seg_student(name, channels, num_classes, seed=seed)

    def decision_rule(self, data, cfg, log: Log) -> list[int]:
        """The smallest predicted region kept per class (pixels, 8-connected): ``bench.min_region`` for every
        foreground class, or, unset, derived from (a seeded sample of) the train masks."""
        from ..metrics.segmentation import derive_min_region

        k, asked = data.num_classes, cfg.bench.min_region
        if asked is not None:
            return [0] + [int(asked)] * (k - 1)
        masks = data.train.masks
        idx = _sample(len(masks), MIN_REGION_SAMPLE, cfg.seed)
        rule = derive_min_region(masks[torch.as_tensor(idx)].numpy(), k)
        log(f"smallest region kept per foreground class: {rule[1:]} px (half the 1st-percentile region area of "
            f"{len(idx)} train masks); each model keeps the rule only if its val Dice does not drop")
        return rule

    def evaluate(self, cand, val_logits, val_targets, test_logits, test_targets, cfg, reference, num_classes, seed,
                 rule=None):
        from ..metrics.segmentation import (
            dice_from_counts,
            dice_scores,
            evaluate_segmentation,
            mean_score,
            overlap_counts,
            paired_dice_diff,
            presence_from_counts,
            remove_small_regions,
        )

        val_pred, test_pred = val_logits.argmax(1), test_logits.argmax(1).astype(np.uint8)
        val_counts = overlap_counts(val_pred, val_targets, num_classes)  # counted once for both figures
        val_dice = mean_score(dice_from_counts(*val_counts))
        decision = None
        if rule is not None and max(rule) > 1:  # nnU-Net's rule: keep the post-processing if val does not lose
            cleared = remove_small_regions(val_pred, rule)
            cleared_counts = overlap_counts(cleared, val_targets, num_classes)
            cleared_dice = mean_score(dice_from_counts(*cleared_counts))
            applied = bool(cleared_dice >= val_dice)
            decision = {"min_region": [int(v) for v in rule], "applied": applied,
                        "val_dice_argmax": val_dice, "val_dice_cleared": cleared_dice}
            if applied:
                val_pred, val_counts, val_dice = cleared, cleared_counts, cleared_dice
                test_pred = remove_small_regions(test_pred, rule)
        _, val_present, val_alarms, val_without = presence_from_counts(*val_counts)
        test = evaluate_segmentation(test_pred, test_targets, num_classes, resamples=cfg.bench.bootstrap_resamples,
                                     seed=seed)
        per_image = _per_image(dice_scores(test_pred, test_targets, num_classes))
        vs = None
        if reference is not None and reference.test_pred is not None:
            diff = paired_dice_diff(test_pred, reference.test_pred, test_targets, num_classes,
                                    resamples=cfg.bench.bootstrap_resamples, seed=seed)
            vs = {"dice_diff": diff.dice_diff, "ci": list(diff.ci) if diff.ci is not None else None,
                  "margin": cfg.max_dice_drop, "method": "paired percentile bootstrap over test images"}
        return SegScores(val_dice, test, vs, per_image, test_pred, val_present, _foreground_sum(val_alarms),
                         _foreground_sum(val_without), decision)

    def choose(self, cands, profile, teacher, budget):
        from ..ship import choose_segmentation

        return choose_segmentation(cands, profile, teacher, budget.max_dice_drop)

    def report_section(self, cands, shipped, ship_info, data, cand_dicts, cfg, work=None) -> dict:
        from ..ship import teacher_reference

        teacher = teacher_reference(cands)
        section = {"metric": "mean foreground Dice per image (an image with the class in neither mask is skipped; "
                             "a false positive on an empty mask scores 0), IoU likewise, HD95 in pixels",
                   "class_names": data.class_names, "teacher": teacher.name, "overlays": [],
                   "small_regions": _small_regions(cands, cfg)}
        if shipped is not None and shipped.metrics is not None and shipped.metrics.per_image_dice is not None:
            scores = np.nan_to_num(shipped.metrics.per_image_dice, nan=1.0)  # nothing to find, nothing found
            worst = np.argsort(scores, kind="stable")[:OVERLAYS]
            section["overlays"] = [{"index": int(i), "student_dice": float(scores[i]),
                                    "teacher_dice": float(np.nan_to_num(teacher.metrics.per_image_dice[i], nan=1.0))}
                                   for i in worst]
            if work is not None and teacher.metrics.test_pred is not None:
                from ..report.segmentation import OVERLAY_FILE, write_overlays

                pre = data.preprocessing
                write_overlays(work / OVERLAY_FILE, data.test.images.numpy(), data.test.masks.numpy(),
                               teacher.metrics.test_pred, shipped.metrics.test_pred, section["overlays"],
                               list(pre.mean), list(pre.std))
                section["overlay_file"] = OVERLAY_FILE
        chosen = ship_info.get("chosen")
        by = {c.name: c for c in cands}
        ship_info["non_inferiority"] = by[chosen].metrics.vs_teacher if chosen and chosen in by else None
        return section

    def sample_arrays(self, split) -> dict[str, np.ndarray]:
        return {"masks": split.masks.numpy().astype(np.uint8)}

    def labels_json(self, shipped: dict, data) -> dict:
        """The decision the device runner applies: the argmax, then the small-region rule if val kept it."""
        out = {"task": self.name, "class_names": data.class_names, "num_classes": data.num_classes,
               "outputs": "per-pixel logits N×K×H×W, one channel per class in this order",
               "decision": "argmax over classes at every pixel (0 is background)", "min_region": None}
        d = (shipped.get("metrics") or {}).get("decision") or {}
        if d.get("applied"):
            out["decision"] = ("argmax over classes at every pixel (0 is background), then every 8-connected region "
                               "of class c smaller than min_region[c] pixels becomes background")
            out["min_region"] = d["min_region"]
        return out


def _small_regions(cands, cfg) -> dict | None:
    """report.json segmentation.small_regions: the rule, where it came from, and which models kept it on val."""
    decided = {c.name: c.metrics.decision for c in cands
               if isinstance(c.metrics, SegScores) and c.metrics.decision is not None}
    if not decided:
        return None
    rule = next(iter(decided.values()))["min_region"]
    return {"min_region": rule,
            "source": "--min-region" if cfg.bench.min_region is not None else
                      f"half the 1st-percentile area of the 8-connected regions of each class in (up to "
                      f"{MIN_REGION_SAMPLE}) train masks",
            "rule": "after the argmax, every 8-connected region of class c smaller than min_region[c] pixels becomes "
                    "background; each model keeps this only if its val mean Dice does not drop (nnU-Net's "
                    "post-processing rule); every figure of a model that keeps it, test included, is of the cleared "
                    "masks, and its bundle's runner applies it",
            "kept_by": [n for n, d in decided.items() if d["applied"]],
            "dropped_by": [n for n, d in decided.items() if not d["applied"]]}


MIN_REGION_SAMPLE = 2000  # train masks read to derive the smallest region kept (a seeded sample of larger sets)


def _sample(n: int, most: int, seed: int) -> np.ndarray:
    from ..data.preprocess import subset_indices

    return subset_indices(n, most, seed)
