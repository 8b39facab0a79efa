"""The search: Optuna's TPE sampler proposes configurations, successive halving spends the time.

Each trial is one :class:`~edgekd.search.space.Config`, evaluated at increasing fidelities
(``fidelities``: e.g. distillation step counts, cheapest first, the last one the full recipe) by
the caller's ``evaluate(config, fidelity)``. After each fidelity the trial reports
:func:`~edgekd.search.budgets.objective` to Optuna at step ``eta**k``, and Optuna's
``SuccessiveHalvingPruner(min_resource=1, reduction_factor=eta)`` (asynchronous successive
halving: a rung per fidelity) stops it unless it is in the best ``1/eta`` of the trials that
reached that rung. So many configurations get a short distillation and the best few the full one.

A short distillation is less accurate than the full one, so against the metric floor every
configuration would look outside the budget at a low rung, and the penalty for the shortfall
would drown the latency differences. Before the objective is computed at rung ``k``, the
metric is therefore moved by the median gap between the full-fidelity metric and the rung-``k``
metric over the configurations already evaluated at both (asynchronous successive halving takes
the first trials all the way, so the gap is known early); the evaluations are kept as measured.

Time: ``budget_s`` of wall clock across every session of the same search. No evaluation starts
after it is spent (one already running finishes: the search can overrun by one evaluation);
the trial it interrupts is recorded as stopped and is the first one tried when the search is
resumed with more time.

Resumable: the Optuna study lives in ``folder/study.journal`` (Optuna's JSON-lines journal
storage; a killed process loses at most the trial it was running), and every evaluation is
appended to ``folder/evaluations.jsonl`` keyed by (``key``, configuration, fidelity). Running the
same search again loads the study, re-queues the trials that were running or stopped, and
answers every evaluation already made from the journal without calling ``evaluate`` again (so a
configuration TPE proposes twice costs nothing either). ``key`` names what evaluations depend on
besides the configuration (the pipeline passes its data and teacher keys): evaluations made
under another key are not reused.

The result holds every configuration tried, the Pareto front of latency vs val metric among
those measured at full fidelity, and the chosen one: the fastest inside every budget.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EdgekdError, InputError
from .budgets import Budgets, Evaluation, objective, pareto_front
from .space import Config, SearchSpace

Evaluate = Callable[[Config, Any], Any]  # -> Evaluation or (val_metric, latency_ms, size_bytes, macs)
STUDY_FILE = "study.journal"
EVALUATIONS_FILE = "evaluations.jsonl"
LATENCY_KINDS = ("measured", "predicted")
MAX_REPEATS = 2  # proposals in a row of configurations already finished before one is drawn at random instead
STATE_ORDER = {"complete": 0, "pruned": 1, "stopped": 2, "failed": 3, "running": 4}  # which record of a config wins


class _EvaluationFailed(Exception):
    """evaluate() raised: the trial is recorded as failed (its one-line reason kept) and the search goes on."""


@dataclass
class TrialRecord:
    """One configuration as the search left it."""

    number: int  # Optuna's trial number (the first trial that reached this state for the config)
    config: Config
    state: str  # complete (full fidelity), pruned (by successive halving), stopped (time budget), failed
    rung: int  # index of the highest fidelity evaluated (-1: none)
    fidelity: Any  # that fidelity's value
    evaluation: Evaluation | None  # at that fidelity
    objective: float | None
    violations: list[str] = field(default_factory=list)  # budgets missed at that fidelity
    error: str | None = None  # why evaluate() failed

    @property
    def full(self) -> bool:
        return self.state == "complete"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialRecord:
        ev = d.get("evaluation")
        return cls(d["number"], Config.from_dict(d["config"]), d["state"], d["rung"], d["fidelity"],
                   Evaluation.from_dict(ev) if ev else None, d["objective"], list(d.get("violations") or []),
                   d.get("error"))

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "config": self.config.to_dict(), "label": self.config.label(),
                "state": self.state, "rung": self.rung, "fidelity": self.fidelity,
                "evaluation": self.evaluation.to_dict() if self.evaluation else None,
                "objective": self.objective, "violations": list(self.violations), "error": self.error}


@dataclass
class SearchResult:
    """What the search found; :meth:`to_dict` is JSON for report.json["search"]."""

    trials: list[TrialRecord]  # one per configuration, in order of first trial
    front: list[TrialRecord]  # Pareto front of latency vs val metric at full fidelity, fastest first
    chosen: TrialRecord | None  # the fastest full-fidelity configuration inside every budget
    reason: str  # one line: why chosen won, or why nothing was
    budgets: Budgets
    space: SearchSpace
    fidelities: list[Any]
    latency_kind: str  # "measured" on the target's runtime, or "predicted" by a LatencyModel
    budget_s: float
    seconds: float  # wall time of this session
    seconds_total: float  # across every session of this search
    stopped: str  # why the search ended: budget, max_trials, exhausted
    evaluations_run: int  # evaluate() calls made in this session
    evaluations_reused: int  # evaluations answered from the journal in this session
    study_name: str = ""
    folder: str = ""
    latency_model: dict | None = None  # the fitted model, when latency was predicted

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study_name, "folder": self.folder, "space": self.space.to_dict(),
            "space_size": self.space.size, "fidelities": list(self.fidelities), "budgets": self.budgets.to_dict(),
            "latency_kind": self.latency_kind, "latency_model": self.latency_model,
            "budget_s": self.budget_s, "seconds": self.seconds, "seconds_total": self.seconds_total,
            "stopped": self.stopped, "evaluations_run": self.evaluations_run,
            "evaluations_reused": self.evaluations_reused, "reason": self.reason,
            "chosen": self.chosen.to_dict() if self.chosen else None,
            "front": [t.number for t in self.front], "trials": [t.to_dict() for t in self.trials],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchResult:
        """Back from :meth:`to_dict` (report.json "search"): what the report's table and plot are drawn from."""
        trials = [TrialRecord.from_dict(t) for t in d["trials"]]
        by = {t.number: t for t in trials}
        chosen = d.get("chosen")
        b = dict(d["budgets"])
        b["metric_range"] = tuple(b.get("metric_range", (0.0, 1.0)))
        return cls(trials, [by[n] for n in d["front"] if n in by], by.get(chosen["number"]) if chosen else None,
                   d["reason"], Budgets(**b), SearchSpace(**{k: tuple(v) for k, v in d["space"].items()}),
                   list(d["fidelities"]), d["latency_kind"], d["budget_s"], d["seconds"], d["seconds_total"],
                   d["stopped"], d["evaluations_run"], d["evaluations_reused"], d.get("study", ""),
                   d.get("folder", ""), d.get("latency_model"))


def run_search(
    evaluate: Evaluate,
    space: SearchSpace,
    *,
    fidelities: Sequence[Any],
    folder: Path,
    budget_s: float,
    budgets: Budgets,
    seed: int = 0,
    eta: int = 3,
    max_trials: int | None = None,
    first: Sequence[Config] = (),
    key: str = "",
    latency_model: Any = None,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
) -> SearchResult:
    """Search ``space`` for the fastest configuration inside ``budgets`` (see the module text).

    ``fidelities``: what ``evaluate`` is given, cheapest first (JSON values). ``eta``: successive
    halving keeps the best ``1/eta`` at each rung. ``max_trials``: distinct configurations at most
    (default: the size of the space). ``first``: configurations tried before TPE proposes any (the
    current defaults, a hand-found setting), in order. ``latency_model``: a fitted
    :class:`~edgekd.search.latency_model.LatencyModel`; when given, each evaluation's latency is
    replaced by its prediction from MACs and layers, and the ranking is labelled "predicted".
    """
    optuna = _optuna()
    space.check()
    budgets.check()
    fidelities = _check_args(fidelities, budget_s, eta, max_trials)
    for c in first:
        if not space.contains(c):
            raise InputError(f"first configuration {c.label()} is outside the search space {space.to_dict()}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kind = "predicted" if latency_model is not None else "measured"
    limit = space.size if max_trials is None else min(max_trials, space.size)

    from ..stagecache import digest

    name = "edgekd-" + digest("search", key, space.to_dict(), fidelities, budgets.to_dict(), seed, eta,
                              latency_model.to_dict() if latency_model is not None else None)[:16]
    storage = _storage(optuna, folder / STUDY_FILE)
    with _quiet_optuna(optuna):
        study = optuna.create_study(
            storage=storage, study_name=name, direction="minimize", load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, limit // 4))),
            pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=eta,
                                                          min_early_stopping_rate=0),
        )
    journal = EvaluationJournal(folder / EVALUATIONS_FILE, key)
    requeued = _resume(study, storage, list(first), log)
    spent_before = float(study.user_attrs.get("seconds", 0.0))
    start = clock()
    deadline = start + (budget_s - spent_before)
    counts = {"run": 0, "reused": 0}
    last = len(fidelities) - 1

    def evaluation(config: Config, k: int) -> Evaluation | None:
        """The evaluation at fidelity ``k``: from the journal, or computed; None when out of time."""
        hit = journal.get(config, k)
        if hit is not None:
            counts["reused"] += 1
            if "error" in hit:
                raise _EvaluationFailed(hit["error"])
            return Evaluation.from_dict(hit["evaluation"])
        if clock() >= deadline:
            return None
        t0 = time.perf_counter()
        try:
            value = evaluate(config, fidelities[k])
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - a configuration that cannot be built or run is a result
            journal.put_error(config, k, fidelities[k], _one_line(exc))
            raise _EvaluationFailed(_one_line(exc)) from None
        ev = Evaluation.of(value)  # a malformed return is the caller's bug: raised, not recorded
        counts["run"] += 1
        if latency_model is not None:
            ev = _predicted(ev, latency_model)
        ev = Evaluation(**{**ev.__dict__, "seconds": round(time.perf_counter() - t0, 3)})
        journal.put(config, k, fidelities[k], ev)
        return ev

    def objective_fn(trial: Any) -> float:
        config = space.suggest(trial)
        value = math.inf
        for k in range(len(fidelities)):
            try:
                ev = evaluation(config, k)
            except _EvaluationFailed as exc:
                trial.set_user_attr("error", str(exc))
                raise
            if ev is None:  # the time budget ran out before this evaluation: resumed first next time
                trial.set_user_attr("stopped", True)
                study.stop()
                raise optuna.TrialPruned()
            value = objective(_corrected(ev, journal.metric_gap(k, last)), budgets)
            trial.set_user_attr(f"eval{k}", ev.to_dict())
            trial.report(value, step=eta ** k)
            if k < last and trial.should_prune():
                raise optuna.TrialPruned()
        return value

    stopped = ""
    rng = random.Random(seed)
    repeats = 0
    try:
        with _quiet_optuna(optuna):
            while True:
                done = _finished_configs(optuna, study)
                if clock() >= deadline:
                    stopped = "budget"
                elif len(done) >= limit:
                    stopped = "exhausted" if len(done) >= space.size else "max_trials"
                if stopped:
                    break
                if repeats >= MAX_REPEATS:  # TPE keeps proposing what it has seen: try something new
                    study.enqueue_trial(_params(_unexplored(space, done, rng)))
                    repeats = 0
                study.optimize(objective_fn, n_trials=1, catch=(_EvaluationFailed,))
                repeats = repeats + 1 if len(_finished_configs(optuna, study)) == len(done) else 0
                if clock() >= deadline:
                    stopped = "budget"
                    break
    finally:
        spent = spent_before + (clock() - start)
        study.set_user_attr("seconds", spent)
    log(f"search: {stopped}; {counts['run']} evaluations run, {counts['reused']} reused from {folder}"
        + (f"; {requeued} interrupted trial(s) re-queued" if requeued else ""))
    trials = _records(optuna, study, fidelities, budgets)
    return _result(trials, budgets, space, fidelities, kind, budget_s, clock() - start, spent, stopped, counts,
                   name, folder, latency_model)


# ---------------------------------------------------------------------------- the evaluation journal
class EvaluationJournal:
    """Every evaluation made, one JSON line each, keyed by (search key, configuration, fidelity index).

    Appended and flushed to disk after each evaluation; a torn last line (a kill while writing)
    is ignored when read back.
    """

    def __init__(self, path: Path, key: str) -> None:
        self.path = Path(path)
        self.key = key
        self._entries: dict[str, dict] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    d = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(d, dict) and "id" in d:
                    self._entries[d["id"]] = d

    def _id(self, config: Config, k: int) -> str:
        from ..stagecache import digest

        return digest("evaluation", self.key, config.to_dict(), k)

    def get(self, config: Config, k: int) -> dict | None:
        return self._entries.get(self._id(config, k))

    def put(self, config: Config, k: int, fidelity: Any, ev: Evaluation) -> None:
        self._append({"id": self._id(config, k), "config": config.to_dict(), "rung": k, "fidelity": fidelity,
                      "evaluation": ev.to_dict()})

    def put_error(self, config: Config, k: int, fidelity: Any, error: str) -> None:
        self._append({"id": self._id(config, k), "config": config.to_dict(), "rung": k, "fidelity": fidelity,
                      "error": error})

    def __len__(self) -> int:
        return len(self._entries)

    def metric_gap(self, k: int, last: int) -> float | None:
        """Median of (metric at fidelity ``last`` − metric at fidelity ``k``) over the configurations
        evaluated at both (None when there are none yet, or ``k`` is ``last``)."""
        if k == last:
            return None
        by: dict[str, dict[int, float]] = {}
        for d in self._entries.values():
            ev = d.get("evaluation")
            if ev is not None and ev.get("val_metric") is not None:
                by.setdefault(json.dumps(d["config"], sort_keys=True), {})[d["rung"]] = ev["val_metric"]
        gaps = sorted(m[last] - m[k] for m in by.values() if k in m and last in m)
        if not gaps:
            return None
        n = len(gaps)
        return gaps[n // 2] if n % 2 else (gaps[n // 2 - 1] + gaps[n // 2]) / 2

    def _append(self, d: dict) -> None:
        self._entries[d["id"]] = d
        with open(self.path, "a") as f:
            f.write(json.dumps(d, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())


# ---------------------------------------------------------------------------- helpers
def _optuna() -> Any:
    from .._compat import require

    return require("optuna", purpose="for --search")


def _storage(optuna: Any, path: Path) -> Any:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(path)))


@contextlib.contextmanager
def _quiet_optuna(optuna: Any) -> Iterator[None]:
    """Optuna logs every trial at INFO and a failed one with its traceback; the search says what matters itself."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def _check_args(fidelities: Sequence[Any], budget_s: float, eta: int, max_trials: int | None) -> list[Any]:
    fid = list(fidelities)
    if not fid:
        raise InputError("a search needs at least one fidelity (e.g. distillation steps [300, 900, 2700])")
    try:
        json.dumps(fid)
    except TypeError:
        raise InputError(f"search fidelities must be JSON values (numbers, strings), got {fid!r}") from None
    if not isinstance(budget_s, (int, float)) or isinstance(budget_s, bool) or not budget_s > 0 \
            or not math.isfinite(budget_s):
        raise InputError(f"search time budget must be a positive number of seconds, got {budget_s!r}: e.g. 1800 (30m)")
    if not isinstance(eta, int) or isinstance(eta, bool) or eta < 2:
        raise InputError(f"successive halving's reduction factor must be an integer >= 2, got {eta!r}: try 3")
    if max_trials is not None and (not isinstance(max_trials, int) or isinstance(max_trials, bool) or max_trials < 1):
        raise InputError(f"max_trials must be an integer >= 1, got {max_trials!r}")
    return fid


def _resume(study: Any, storage: Any, first: list[Config], log: Callable[[str], None]) -> int:
    """Mark trials a killed process left running as failed, and queue again every interrupted configuration."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if not trials:
        for c in first:
            study.enqueue_trial(_params(c))
        return 0
    finished = {_key(t.params) for t in trials if t.state == TrialState.COMPLETE or
                (t.state == TrialState.PRUNED and not t.user_attrs.get("stopped"))}
    finished |= {_key(t.params) for t in trials if t.state == TrialState.FAIL and "error" in t.user_attrs}
    waiting = {_key(t.params) for t in trials if t.state == TrialState.WAITING}
    requeue = []
    for t in trials:
        if t.state == TrialState.RUNNING:  # its process was killed
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        interrupted = t.state in (TrialState.RUNNING, TrialState.FAIL) and "error" not in t.user_attrs
        stopped = t.state == TrialState.PRUNED and t.user_attrs.get("stopped")
        k = _key(t.params)
        if (interrupted or stopped) and t.params and k not in finished and k not in waiting:
            requeue.append(t.params)
            waiting.add(k)
    for params in requeue:
        study.enqueue_trial(params)
    if trials:
        log(f"search: resuming study {study.study_name} ({len(finished)} configurations finished)")
    return len(requeue)


def _finished_configs(optuna: Any, study: Any) -> set[str]:
    from optuna.trial import TrialState

    return {_key(t.params) for t in study.get_trials(deepcopy=False)
            if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and "error" in t.user_attrs)
            or (t.state == TrialState.PRUNED and not t.user_attrs.get("stopped"))}


def _unexplored(space: SearchSpace, done: set[str], rng: random.Random) -> Config:
    """A seeded random configuration not yet finished (the space is finite and not exhausted)."""
    import itertools

    left = [c for c in (Config(*v) for v in itertools.product(*(getattr(space, d) for d in space.DIMENSIONS)))
            if _key(_params(c)) not in done]
    return rng.choice(left)


def _params(c: Config) -> dict[str, Any]:
    return {"student": c.student, "prune_depth": c.prune_depth, "prune_ratio": c.prune_ratio,
            "lowrank_energy": c.lowrank_energy, "precision": c.precision}


def _key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def _records(optuna: Any, study: Any, fidelities: list[Any], budgets: Budgets) -> list[TrialRecord]:
    """One record per configuration: its best-finished trial (complete > pruned > stopped > failed)."""
    from optuna.trial import TrialState

    by: dict[str, TrialRecord] = {}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING or not t.params:
            continue
        config = Config.from_dict(t.params)
        rungs = sorted(int(k[4:]) for k in t.user_attrs if k.startswith("eval") and k[4:].isdigit())
        rung = rungs[-1] if rungs else -1
        ev = Evaluation.from_dict(t.user_attrs[f"eval{rung}"]) if rungs else None
        state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
                 TrialState.RUNNING: "running"}[t.state]
        if state == "pruned" and t.user_attrs.get("stopped"):
            state = "stopped"
        if state == "failed" and "error" not in t.user_attrs:
            state = "stopped"  # interrupted (Ctrl-C, a kill): not the configuration's fault
        rec = TrialRecord(t.number, config, state, rung, fidelities[rung] if rung >= 0 else None, ev,
                          objective(ev, budgets) if ev else None, budgets.violations(ev) if ev else [],
                          t.user_attrs.get("error"))
        k = _key(t.params)
        old = by.get(k)
        if old is None or (STATE_ORDER[rec.state], -rec.rung) < (STATE_ORDER[old.state], -old.rung):
            by[k] = rec
    return sorted(by.values(), key=lambda r: r.number)


def _result(trials: list[TrialRecord], budgets: Budgets, space: SearchSpace, fidelities: list[Any], kind: str,
            budget_s: float, seconds: float, spent: float, stopped: str, counts: dict, name: str, folder: Path,
            latency_model: Any) -> SearchResult:
    full = [t for t in trials if t.full and t.evaluation is not None]
    front = [full[i] for i in pareto_front([(t.evaluation.latency_ms, t.evaluation.val_metric) for t in full])]
    chosen, reason = choose(full, budgets, kind)
    if not full:
        reason = (f"no configuration reached full fidelity ({fidelities[-1]!r}) within the {budget_s:g} s budget "
                  f"({len(trials)} tried): give the search more time (--search-budget) or fewer fidelities")
    return SearchResult(trials, front, chosen, reason, budgets, space, fidelities, kind, budget_s, seconds, spent,
                        stopped, counts["run"], counts["reused"], name, str(folder),
                        latency_model.to_dict() if latency_model is not None else None)


def choose(full: list[TrialRecord], budgets: Budgets, kind: str = "measured") -> tuple[TrialRecord | None, str]:
    """The fastest full-fidelity configuration inside every budget (ties: higher metric, smaller file), and why."""
    inside = [t for t in full if not t.violations]
    what = "predicted" if kind == "predicted" else "measured"
    if not inside:
        if not full:
            return None, "no configuration was evaluated at full fidelity"
        by_budget: dict[str, int] = {}
        for t in full:
            for v in t.violations:
                by_budget[v.split(" ")[0]] = by_budget.get(v.split(" ")[0], 0) + 1
        fastest = min(full, key=lambda t: t.evaluation.latency_ms)
        best = max(full, key=lambda t: -math.inf if math.isnan(t.evaluation.val_metric) else t.evaluation.val_metric)
        return None, (f"none of {len(full)} configurations at full fidelity is inside every budget "
                      f"(missed: {', '.join(f'{k} by {n}' for k, n in sorted(by_budget.items()))}); fastest was "
                      f"{fastest.config.label()} at {fastest.evaluation.latency_ms:.3f} ms ({'; '.join(fastest.violations)}), "
                      f"best metric {best.config.label()} at {best.evaluation.val_metric:.4f}")
    chosen = min(inside, key=lambda t: (t.evaluation.latency_ms, -t.evaluation.val_metric, t.evaluation.size_bytes,
                                        t.number))
    ev = chosen.evaluation
    runner_up = sorted((t for t in inside if t is not chosen), key=lambda t: t.evaluation.latency_ms)
    nxt = (f"; next {runner_up[0].config.label()} at {runner_up[0].evaluation.latency_ms:.3f} ms"
           if runner_up else "")
    faster = [t for t in full if t.evaluation.latency_ms < ev.latency_ms]
    beat = f"; {len(faster)} faster configuration(s) missed a budget" if faster else ""
    return chosen, (f"fastest of {len(inside)} inside every budget ({what} latency): {chosen.config.label()} at "
                    f"{ev.latency_ms:.3f} ms, val metric {ev.val_metric:.4f}, {ev.size_bytes / 1024:.0f} KiB{nxt}{beat}")


def _corrected(ev: Evaluation, gap: float | None) -> Evaluation:
    """A short distillation's metric moved by the median gap to the full one (see the module text)."""
    if gap is None or math.isnan(ev.val_metric):
        return ev
    return Evaluation(ev.val_metric + gap, ev.latency_ms, ev.size_bytes, ev.macs, ev.layers, ev.seconds)


def _predicted(ev: Evaluation, model: Any) -> Evaluation:
    if ev.layers is None:
        raise EdgekdError("a latency model needs each evaluation's layer count: return an Evaluation with layers=")
    return Evaluation(ev.val_metric, float(model.predict(ev.macs, ev.layers)), ev.size_bytes, ev.macs, ev.layers,
                      ev.seconds)


def _one_line(exc: BaseException, limit: int = 240) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{type(exc).__name__}: {text}"[:limit]
