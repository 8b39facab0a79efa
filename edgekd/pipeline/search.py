"""``compress --search``: the pipeline's own stages run for many configurations; the fastest inside the budgets is kept.

    search_config(cfg, inp, store, log) -> (the chosen configuration's CompressConfig, SearchResult)

One evaluation runs the training and lowering stages (teacher-signal → distill → prune → low-rank →
lower-fp32 → quantize → lower-int8, and lower-tensorrt for device-built targets) for one
configuration (:class:`edgekd.search.Config`: student, depth, channel ratio, low rank, precision)
at one fidelity (distillation steps; prune fine-tunes, recovery and QAT keep their shares of it)
into a scratch folder, then scores the student of the configuration's precision **on the target's
runtime**: its val metric (AUC, or mean Dice) from the lowered file, and its batch-1 p50 timed
there (or predicted by a :class:`~edgekd.search.LatencyModel` fitted on device figures, for
TensorRT targets, whose engines the host cannot build). Test images are never looked at.

Every stage keeps its output in the run's stage cache, so configurations that share a prefix
share it (the teacher's views are computed once for every configuration and fidelity; a distilled
student once per student and fidelity; a pruned one once per depth and ratio), an interrupted
search resumes from its journal (:mod:`edgekd.search.study`), and the final run of ``compress``
with the chosen configuration reuses every stage and only measures, ships and reports.
"""
from __future__ import annotations

import contextlib
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from ..config import CompressConfig
from ..errors import EdgekdError, InputError
from ..stagecache import StageStore, digest
from .run import Log, Run
from .stage import run_stages

LOW_FIDELITY = 3  # the cheap rung distils for a third of the steps (successive halving keeps the best third)
MIN_LOW_STEPS = 100  # below this a short distillation says nothing: one fidelity only
SEARCH_TIMING_S = 1.0  # per latency figure during the search (the final benchmark times the shipped model fully)
EVALUATION_STAGES = ("teacher-signal", "distill", "prune", "lowrank", "lower-fp32", "quantize", "lower-int8",
                     "lower-tensorrt")


def search_config(cfg: CompressConfig, inp, store: StageStore, log: Log):
    """Search the space for ``cfg``'s target; return (the chosen configuration's config, the SearchResult).

    The returned config is ``cfg`` with the chosen student, prune depth and ratio, low-rank energy,
    INT8 on or off, and the full distillation budget written out; the teacher's augmentation mode and
    view count are fixed to what the full budget decided, so every evaluation shares one teacher signal.
    With nothing inside the budgets the best configuration found is returned anyway: the shipping rule
    of the final run then says why nothing ships.
    """
    from ..search import Budgets, Config, default_space, run_search
    from ..search.adapt import compress_config

    s, profile, task = cfg.search, inp.profile, inp.task
    budget_s, max_latency, latency_model = check_search(cfg, profile)
    device_built = latency_model is not None
    from .teacher import TeacherSignalStage

    with tempfile.TemporaryDirectory(prefix=".search-probe-", dir=_scratch_root(store)) as tmp:
        probe = Run(cfg, inp, store, Path(tmp), _silent)
        sig_stage = TeacherSignalStage()
        _, _, views, mode, _, _ = sig_stage._plan(probe)
        with _quiet(store):
            sig_stage.execute(probe)
        obj, data = task.objective, inp.data
        teacher_val = float(obj.score(probe.signal.val, obj.targets(data.val), data.num_classes))
        full_steps = probe.budget.distill
    base = replace(cfg, distill=replace(cfg.distill, teacher_mode=mode,
                                        cached_views=views if mode == "cached" else cfg.distill.cached_views))
    students = _students(cfg, inp)
    space = default_space(profile, lowrank=s.lowrank, students=students)
    space = replace(space, prune_depths=(None,) + space.prune_depths,
                    prune_ratios=tuple(sorted(set(space.prune_ratios) | {cfg.prune.ratio})))
    low = full_steps // LOW_FIDELITY
    fidelities = [low, full_steps] if low >= MIN_LOW_STEPS else [full_steps]
    drop = _metric_drop(task, profile, cfg)
    budgets = Budgets(max_latency_ms=max_latency, max_size_mb=s.max_size_mb, max_metric_drop=drop, teacher_metric=teacher_val)
    defaults = Config(students[0], cfg.prune.depth, float(cfg.prune.ratio), cfg.lowrank.energy,
                      _default_precision(profile, cfg))
    first = [defaults] if space.contains(defaults) else []
    key = digest("compress-search", probe.data_key, probe.teacher_key, profile.name, inp.threads,
                 _settings(base), students)
    log(f"search: {space.size} configurations of {', '.join(students)} × depth × channels"
        f"{' × low rank' if s.lowrank else ''} × {'/'.join(space.precisions)} for {profile.name}; budget "
        f"{budget_s / 60:.0f} min; fidelities {' → '.join(map(str, fidelities))} distillation steps; val "
        f"{obj.metric_label} floor {budgets.metric_floor:.4f} (teacher "
        f"{teacher_val:.4f} − {drop:g})"
        + (f", latency ≤ {budgets.max_latency_ms:g} ms" if budgets.max_latency_ms is not None else "")
        + (f", file ≤ {budgets.max_size_mb:g} MiB" if budgets.max_size_mb is not None else "")
        + ("; latency PREDICTED by " + latency_model.text() if latency_model is not None else "; latency measured on "
           f"{profile.runtime} here"))
    started = time.perf_counter()

    def evaluate(config: Config, steps: int):
        c = _config_of(compress_config, base, config, steps)
        log(f"search [{(time.perf_counter() - started) / 60:.1f}/{budget_s / 60:.0f} min]: {config.label()}, "
            f"{steps} steps")
        t0 = time.perf_counter()
        ev = _evaluate(c, config, inp, store, (probe.data_key, probe.teacher_key), device_built)
        log(f"  → val {ev.val_metric:.4f}, " + ("latency predicted" if device_built else f"{ev.latency_ms:.3f} ms")
            + f", {ev.size_bytes / 1024:.0f} KiB, {ev.macs / 1e6:.2f} MMACs ({time.perf_counter() - t0:.0f} s)")
        return ev

    student_before = inp.student
    try:
        result = run_search(evaluate, space, fidelities=fidelities, folder=store.root / "search", budget_s=budget_s,
                            budgets=budgets, seed=cfg.seed, max_trials=s.max_trials, first=first, key=key,
                            latency_model=latency_model, log=log)
    finally:
        inp.student = student_before
    pick = result.chosen or _best(result)
    log(f"search: {result.reason}")
    if pick is None:
        log("search: no configuration finished at full fidelity; compress continues with the options as given")
        return cfg, result
    final = _config_of(compress_config, base, pick.config, full_steps)
    inp.student = pick.config.student
    return final, result


def check_search(cfg: CompressConfig, profile):
    """(budget seconds, latency budget, latency model or None): every --search setting checked against the
    target, in one line each, before any data or teacher is read."""
    from ..lower import backend_info
    from ..search import Budgets, parse_duration

    s = cfg.search
    budget_s = parse_duration(s.budget)
    if s.latency_from is not None and not Path(s.latency_from).is_file():
        raise InputError(f"--search-latency-from {s.latency_from}: no such file (a report.json merged with device figures)")
    max_latency = s.max_latency_ms if s.max_latency_ms is not None else profile.latency_budget_ms
    Budgets(max_latency_ms=max_latency, max_size_mb=s.max_size_mb, max_metric_drop=None).check()
    device_built = backend_info(profile.runtime).device_built
    if s.latency_from is not None and not device_built:
        raise InputError(f"--search-latency-from is for targets the host cannot time (TensorRT); {profile.name} "
                         f"runs {profile.runtime} here, so the search measures its latency: drop the option")
    return budget_s, max_latency, _latency_model(s.latency_from, profile) if device_built else None


def _evaluate(c: CompressConfig, config, inp, store: StageStore, keys: tuple[str, str], device_built: bool):
    """(val metric, latency, size, MACs, layers) of one configuration's deployable student. ``keys``: the
    data and teacher keys, computed once for the whole search."""
    import numpy as np
    import torch

    from ..lower._base import predict_batched
    from ..measure.latency import time_candidate
    from ..search import Evaluation
    from . import stages

    inp.student = config.student
    with tempfile.TemporaryDirectory(prefix=".search-eval-", dir=_scratch_root(store)) as tmp, _quiet(store):
        run = Run(c, inp, store, Path(tmp), _silent, data_key=keys[0], teacher_key=keys[1])
        run_stages(run, [st for st in stages() if st.name in EVALUATION_STAGES])
        cand = _deployable(run, inp.profile, config.precision)
        obj, data = inp.task.objective, inp.data
        val = data.val.images.numpy().astype(np.float32, copy=False)
        logits = torch.from_numpy(predict_batched(cand.runner, val))
        metric = float(obj.score(logits, obj.targets(data.val), data.num_classes))
        latency = math.nan
        if not device_built:
            bench = replace(c.bench, memory=False, max_seconds=min(c.bench.max_seconds, SEARCH_TIMING_S))
            time_candidate(cand, val, bench, inp.threads, 1)
            latency = float(cand.latency.p50)
        return Evaluation(metric, latency, int(cand.size_bytes or 0), int(cand.macs or 0), int(cand.layers))


def _deployable(run: Run, profile, precision: str):
    """The student file of ``precision`` on the target's runtime (EdgekdError, recorded as failed, when none)."""
    for c in run.candidates:
        if c.role == "student" and c.backend == profile.runtime and c.precision == precision:
            return c
    made = ", ".join(c.name for c in run.candidates if c.role == "student") or "none"
    raise EdgekdError(f"no {precision} {profile.runtime} student was produced (made: {made})")


def _config_of(compress_config, base: CompressConfig, config, steps: int) -> CompressConfig:
    c, energy = compress_config(base, config, steps)
    return replace(c, lowrank=replace(c.lowrank, energy=energy))


def _students(cfg: CompressConfig, inp) -> tuple[str, ...]:
    """--student when given; else the resolved default first (the teacher cut down when it converts), then the
    profile's zoo student."""
    from ..prune.derived import FROM_TEACHER

    if cfg.distill.student is not None:
        return (inp.student,)
    if inp.student == FROM_TEACHER and inp.profile.default_student != FROM_TEACHER:
        return (FROM_TEACHER, inp.profile.default_student)
    return (inp.student,)


def _default_precision(profile, cfg: CompressConfig) -> str:
    if cfg.quant.enabled and "int8" in profile.precisions:
        return "int8"
    return next((p for p in profile.precisions if p != "int8"), profile.precisions[0])


def _metric_drop(task, profile, cfg: CompressConfig) -> float:
    """The task's metric budget (max AUC or Dice drop): the command line's, else the profile's."""
    name = task.budgets[0]  # "max_auc_drop" or "max_dice_drop"
    value = getattr(cfg, name, None)
    return float(value if value is not None else getattr(profile, name))


def _settings(cfg: CompressConfig) -> dict:
    """What evaluations depend on besides the configuration: not where the output goes."""
    d = cfg.to_dict()
    for k in ("out", "overwrite", "force", "archive", "cache_dir", "search", "max_auc_drop", "max_sensitivity_drop",
              "max_dice_drop", "max_robust_drop"):
        d.pop(k, None)
    for k in ("student", "max_steps"):
        d["distill"].pop(k, None)
    d["prune"].pop("depth", None), d["prune"].pop("ratio", None)
    d["quant"].pop("enabled", None), d["lowrank"].pop("energy", None)
    return d


def _best(result):
    """The full-fidelity configuration with the lowest objective (when none is inside every budget)."""
    full = [t for t in result.trials if t.full and t.objective is not None]
    return min(full, key=lambda t: t.objective) if full else None


def _latency_model(path, profile):
    import json

    from ..search import LatencyModel, points_from_report

    if path is None:
        raise InputError(f"--search on {profile.name}: its {profile.runtime} engines are built and timed on the device "
                         "only, so the search ranks by a latency model fitted on device figures: run a bundle's "
                         "runner on the device, fold it in with `edgekd report --merge`, and pass that report.json "
                         "as --search-latency-from")
    p = Path(path)
    try:
        report = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"--search-latency-from {p}: cannot read it as report.json ({type(exc).__name__})") from None
    points = points_from_report(report)
    if len(points) < 3:
        raise InputError(f"--search-latency-from {p} holds {len(points)} device measurement(s); the latency model "
                         "needs at least 3 (several candidates timed on the device and merged)")
    return LatencyModel.fit(points, source=str(p))


def _scratch_root(store: StageStore) -> Path:
    store.root.mkdir(parents=True, exist_ok=True)
    return store.root


def _silent(msg: str) -> None:
    """The log of search evaluations' stages (the search logs one line per evaluation)."""


@contextlib.contextmanager
def _quiet(store: StageStore):
    """The stage store's reuse lines silenced while an evaluation runs."""
    before, store.log = store.log, _silent
    try:
        yield
    finally:
        store.log = before
