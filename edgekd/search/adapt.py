"""A searched configuration as compress settings: what the pipeline's ``evaluate`` builds for it.

Low rank has no compress setting yet: :func:`compress_config` returns it beside the config for the
stage that factorizes (``edgekd.lowrank.factorize`` after prune, then a distillation fine-tune).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from .space import Config


def compress_config(base: Any, config: Config, steps: int) -> tuple[Any, float | None]:
    """(``base`` with the student, prune depth/ratio, INT8 on or off and ``steps`` distillation steps
    of ``config``; its low-rank energy or None). ``base`` is an :class:`edgekd.config.CompressConfig`.

    INT8 is enabled only for an ``int8`` configuration (an fp32 one skips the quantize stage); the
    stage cache keys make configurations that share a student and prune settings share those stages.
    """
    cfg = replace(base, distill=replace(base.distill, student=config.student, max_steps=int(steps)),
                  prune=replace(base.prune, depth=config.prune_depth, ratio=float(config.prune_ratio)),
                  quant=replace(base.quant, enabled=config.precision == "int8"))
    return cfg, config.lowrank_energy
