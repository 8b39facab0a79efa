"""``compress()``: the one library entry point. The CLI's ``edgekd compress`` is a thin wrapper.

    resolve inputs (edgekd.inputs) → the pipeline's stages (edgekd.pipeline):
    teacher-signal → baselines → distill → prune → lowrank → lower-fp32 → quantize → lower-int8
    → lower-tensorrt → benchmark (measure, ship: edgekd.ship, report: edgekd.report, bundle)

With ``--search`` (``cfg.search.budget``) the training and lowering stages first run for many
configurations (edgekd.pipeline.search), and the pipeline then runs once more with the chosen one.

Every input is validated before anything is written. Work happens in a staging folder next to
``--out`` that is renamed into place at the end, so a failed run leaves no half-written output.
Each stage keeps its finished output in a stage cache keyed by its inputs and config, so an
interrupted run resumes where it stopped.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .config import CompressConfig
from .measure.candidates import Candidate

Log = Callable[[str], None]


@dataclass
class Result:
    report: dict
    out: Path
    shipped: Candidate | None
    candidates: list[Candidate] = field(default_factory=list)


def compress(cfg: CompressConfig, *, log: Log = print) -> Result:
    """Run the whole pipeline. Raises EdgekdError on bad input, NotShippedError when nothing qualifies.

    Finished stages are kept in the stage cache (``cfg.cache_dir``, default ``.edgekd-cache`` beside
    ``--out``) and reused by the next run with the same inputs; Ctrl-C says where it stopped.

    Under ``torchrun`` (several processes, :mod:`edgekd._dist`) every process calls this; the training
    stages run in all of them, and rank 0 alone writes ``--out`` and returns the report (the others
    return a Result with an empty report once the last training stage is done).
    """
    from . import _dist
    from .inputs import resolve_inputs
    from .pipeline import Run, run_stages, stages
    from .ship import not_shipped
    from .stagecache import StageStore, staging

    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    world = _dist.from_env()
    if world.distributed:
        from .errors import InputError

        if cfg.search.budget is not None:
            raise InputError("--search runs one process: start it without torchrun (its trials are short), then "
                             "run the chosen settings under torchrun")
        if cfg.distill.feature_kd:
            raise InputError("--feature-kd runs one process (the hint layer is not shared between processes yet): "
                             "drop it, or start the run without torchrun")
        if not world.main:
            log = _quiet  # rank 0 says what happens
    inp = resolve_inputs(cfg, log)
    cfg = inp.task.with_defaults(cfg)  # e.g. the task's --prune-ratio
    cache = Path(cfg.cache_dir) if cfg.cache_dir is not None else Path(cfg.out).parent / ".edgekd-cache"
    store = StageStore(cache, seed=cfg.seed, force=cfg.force, log=log)
    searched = None
    try:
        if cfg.search.budget is not None:
            from .pipeline.search import search_config

            store.current = "search"
            cfg, searched = search_config(cfg, inp, store, log)
            store.current = None
        if not _dist.world().main:  # another process of a torchrun group: trains, writes nothing
            with tempfile.TemporaryDirectory(prefix=f"edgekd-rank{_dist.world().rank}-") as work:
                run_stages(Run(cfg, inp, store, Path(work), log, started=t0), stages())
            return Result({}, Path(cfg.out), None)
        with staging(cfg.out, cfg.overwrite) as work:
            run = Run(cfg, inp, store, work, log, started=t0, search=searched)
            run_stages(run, stages())
            if run.shipped is None:
                raise not_shipped(run.ship_info, Path(cfg.out))
    except KeyboardInterrupt:
        done = ", ".join(store.finished) or "none"
        log(f"interrupted during stage {store.current or 'set-up'}; finished stages ({done}) are kept in {cache}: "
            "run the same command again to resume")
        raise
    finally:
        _dist.teardown()  # leaves torchrun's process group (nothing with one process)
    return Result(run.report, Path(cfg.out), run.shipped, run.candidates)


def _quiet(msg: str) -> None:
    """The log of a torchrun process other than rank 0 (which says what happens)."""
