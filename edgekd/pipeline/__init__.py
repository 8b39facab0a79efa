"""The pipeline: a list of stages, run in order on one :class:`Run`.

    teacher-signal → baselines → distill → prune → lowrank → lower-fp32 → quantize → lower-int8
    → lower-tensorrt → benchmark

Each stage is one module here (see :mod:`edgekd.pipeline.stage` for the interface); the cached
ones keep their finished output in the stage cache, so an interrupted run resumes where it
stopped. Models travel between stages as files that need no pickle (state_dicts read with
``weights_only=True``, the pruned structure as JSON, ONNX, OpenVINO IR).
"""
from __future__ import annotations

from .benchmark import BenchmarkStage
from .distill import DistillStage
from .lower import LowerStage, TensorRTStage
from .lowrank import LowRankStage
from .prune import PruneStage
from .quantize import QuantizeStage
from .run import Run
from .stage import Stage, run_stages
from .teacher import BaselinesStage, TeacherSignalStage


def stages() -> list[Stage]:
    """The compress pipeline, in order (fresh stage objects for each run)."""
    return [
        TeacherSignalStage(),
        BaselinesStage(),
        DistillStage(),
        PruneStage(),
        LowRankStage(),
        LowerStage("fp32"),
        QuantizeStage(),
        LowerStage("int8"),
        TensorRTStage(),
        BenchmarkStage(),
    ]


__all__ = ["Run", "Stage", "run_stages", "stages"]
