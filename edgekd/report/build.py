"""report.json's content, assembled from one run's inputs, candidates, stages and shipping decision."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..config import CompressConfig
from ..measure.candidates import Candidate
from ..ship import speedups


def training_section(cfg: CompressConfig, stages: dict, metric: str = "AUC", device: dict | None = None) -> dict:
    """How the students were taught: step budgets, the device, the teacher's mode, the augmentation
    (report.json "training"; a stage reused from the cache says in its own entry where it trained)."""
    teacher = stages.get("teacher", {})
    return {"budget": stages.get("budget"), "device": device, "teacher_mode": teacher.get("mode"), "teacher_mode_reason": teacher.get("why"),
            "cached_views": teacher.get("views"), "augmentation": teacher.get("augmentation"),
            "unlabelled_images": teacher.get("unlabelled_images", 0), "selection":
            "lowest val KL(teacher ‖ student) among checkpoints after "
            f"{cfg.distill.min_fraction:.0%} of the budget, within 0.01 of the best val {metric}"}


def build_report(cfg: CompressConfig, inp, cands: list[Candidate], shipped: Candidate | None,
                 ship_info: dict, stages: dict, work: Path, seconds: float, *, robust=None,
                 search=None) -> dict:
    from ..measure.machine import machine_info
    from .precision import precision_notes
    from .robustness import robustness_section
    from .writer import SCHEMA_VERSION

    d, t = inp.data, inp.teacher
    cand_dicts = [c.to_dict(work) for c in cands]
    task = inp.task
    section = task.report_section(cands, shipped, ship_info, d, cand_dicts, cfg, work)
    return {
        "schema_version": SCHEMA_VERSION,
        "edgekd_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": cfg.seed,
        "task": task.name,
        "target": inp.profile.to_dict(),
        "teacher": {"spec": t.spec, "path": str(t.path) if t.path else None, "sha256": t.sha256, "format": t.format},
        "dataset": {
            "path": str(d.path) if d.path else None, "sha256": d.sha256, "format": d.format,
            "synthetic": d.format == "synthetic", "num_classes": d.num_classes, "class_names": d.class_names,
            "channels": d.channels, "image_size": list(d.image_size), "splits": d.split_sizes(),
        },
        "preprocessing": d.preprocessing.to_dict(),
        "machine": machine_info(inp.threads),
        "config": cfg.to_dict(),
        "training": training_section(cfg, stages, task.objective.metric_label, inp.device_info),
        "stages": stages,
        "candidates": cand_dicts,
        "shipped": shipped.name if shipped else None,
        "shipping": ship_info,
        task.section: section,  # "clinical" (classification) or "segmentation"
        "speedups": speedups(cands, shipped),
        "precision_notes": precision_notes(cands, inp.profile, shipped),
        "robustness": robustness_section(robust, cands, shipped, ship_info),
        "search": search.to_dict() if search is not None else None,  # --search: every configuration tried (edgekd.search)
        "seconds": seconds,
    }
