"""The task interface: one small object per task that the pipeline asks where the task matters."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    import torch

    from ..config import CompressConfig, Preprocessing
    from ..measure.candidates import Candidate
    from ..targets import TargetProfile

Log = Callable[[str], None]


class Task:
    """What a task says: its data, teacher, students, training objective, metrics, budgets, report and bundle."""

    name = ""
    section = ""  # report.json's key for the task's figures: "clinical" | "segmentation"
    sample_size = 300  # test images in the bundle's sample.npz
    budgets: tuple[str, ...] = ()  # the profile's shipping budgets this task applies
    robustness = False  # scored under acquisition shift in the benchmark (edgekd.robust)
    robust_metric = "auc"  # what the robustness step scores: "auc" (labels) or "dice" (masks moved with the image)
    robust_images = 512  # the default bench.robust_images: val and test images scored under every shift

    @property
    def objective(self):
        """The training loop's half of the task (:mod:`edgekd.distill.objective`)."""
        raise NotImplementedError

    # inputs -------------------------------------------------------------------------------------
    def with_defaults(self, cfg: CompressConfig) -> CompressConfig:
        """``cfg`` with the settings left to the task (None) filled in: what the stages, keys and report see."""
        from dataclasses import replace

        bench = cfg.bench if cfg.bench.robust_images is not None else replace(cfg.bench,
                                                                               robust_images=self.robust_images)
        return replace(cfg, prune=self.objective.prune_defaults(cfg.prune),
                       distill=self.objective.with_defaults(cfg.distill), bench=bench)

    def check_settings(self, cfg: CompressConfig) -> None:
        """Settings this task cannot honour fail before any work, in one line."""

    def load_data(self, cfg: CompressConfig, pre: Preprocessing, log: Log) -> tuple[Any, str, Any]:
        """(dataset, teacher spec, teacher weights): the user's, or the task's embedded demo."""
        raise NotImplementedError

    def load_teacher(self, spec: str, weights, cfg: CompressConfig, data) -> Any:
        """The teacher, loaded and checked against the data (channels, classes, output shape)."""
        raise NotImplementedError

    def check_student(self, cfg: CompressConfig, profile: TargetProfile, data) -> None:
        """An unknown student, or --student-weights that do not fit, fail here."""

    def choose_student(self, cfg: CompressConfig, profile: TargetProfile, teacher, example: torch.Tensor,
                       log: Log) -> tuple[str, torch.nn.Module | None]:
        raise NotImplementedError

    def create_student(self, name: str, channels: int, num_classes: int, seed: int) -> torch.nn.Module:
        raise NotImplementedError

    # measurement and shipping ----------------------------------------------------------------------
    def targets(self, split) -> np.ndarray:
        return self.objective.targets(split).numpy()

    def decision_rule(self, data, cfg: CompressConfig, log: Log) -> Any:
        """What the decision after the model's outputs is derived from the train split, once per run, for
        :meth:`evaluate` (segmentation: the smallest region kept per class); None: nothing."""
        return None

    def evaluate(self, cand: Candidate, val_logits: np.ndarray, val_targets: np.ndarray, test_logits: np.ndarray,
                 test_targets: np.ndarray, cfg: CompressConfig, reference, num_classes: int, seed: int,
                 rule: Any = None) -> Any:
        """The candidate's metrics object (``Candidate.metrics``); ``rule``: :meth:`decision_rule`'s."""
        raise NotImplementedError

    def budget(self, profile: TargetProfile, cfg: CompressConfig):
        """The shipping budgets (:class:`edgekd.targets.Budget`) of this run."""
        from ..targets import shipping_budget

        return shipping_budget(profile, cfg.max_auc_drop, cfg.max_sensitivity_drop, cfg.max_dice_drop,
                               cfg.max_robust_drop)

    def choose(self, cands: list[Candidate], profile: TargetProfile, teacher, budget) -> tuple[Any, dict]:
        """(shipped candidate or None, report.json "shipping"): chosen on val, confirmed on test."""
        raise NotImplementedError

    # report and bundle ------------------------------------------------------------------------------
    def report_section(self, cands: list[Candidate], shipped, ship_info: dict, data, cand_dicts: list[dict],
                       cfg: CompressConfig, work=None) -> dict:
        raise NotImplementedError

    def sample_arrays(self, split) -> dict[str, np.ndarray]:
        """What the bundle's sample.npz holds besides the images (labels, or masks)."""
        raise NotImplementedError

    def labels_json(self, shipped: dict, data) -> dict:
        """labels.json: what the outputs mean and the decision rule the device runner applies."""
        raise NotImplementedError
