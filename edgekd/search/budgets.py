"""Budgets a searched configuration must stay inside, the one number Optuna minimises, the Pareto front.

The choice itself is strict: the fastest configuration measured at full fidelity that is inside
every budget (:func:`choose`). Optuna needs one number per report to rank trials at each rung
of successive halving, where short distillations are not yet accurate, so :func:`objective` is a
soft version of the same rule: ``log(latency)``, plus a penalty for each budget missed, in
units of the budget (a metric ``max_metric_drop`` below the floor costs as much as
``e^PENALTY`` times the latency), plus a constant so that a configuration inside every budget
ranks above one outside any of them at the same latency.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import InputError

MIB = 1024 * 1024
MIN_LATENCY_MS = 1e-3  # 1 µs: below the timer's resolution and any runtime's per-call cost; no budget can be lower
MIN_SIZE_MB = 1e-3  # 1 KiB: no model file is smaller (an ONNX header and one weight already take more)
PENALTY = 3.0  # objective units per budget width missed
INFEASIBLE = 1.0  # objective units added to any configuration outside a budget
METRIC_SCALE_MIN = 0.01  # the metric penalty's unit is max(|max_metric_drop|, this)


@dataclass(frozen=True)
class Evaluation:
    """What ``evaluate(config, fidelity)`` returns (a 4-tuple of the first fields is accepted too)."""

    val_metric: float  # higher is better (val AUC); NaN: undefined (counts as outside the metric budget)
    latency_ms: float  # batch-1 p50 on the target's runtime (or predicted: see LatencyModel)
    size_bytes: int  # the deployable file
    macs: int  # one forward pass at the run's input size
    layers: int | None = None  # convolutions + linears (the latency model's second term), when known
    seconds: float = 0.0  # wall time the evaluation took (set by the search)

    @classmethod
    def of(cls, value: Any) -> Evaluation:
        if isinstance(value, Evaluation):
            return value
        if isinstance(value, dict):
            return cls(**value)
        try:
            metric, latency, size, macs, *rest = value
        except (TypeError, ValueError):
            raise InputError(f"evaluate() must return (val_metric, latency_ms, size_bytes, macs) or an Evaluation, "
                             f"got {type(value).__name__}") from None
        return cls(float(metric), float(latency), int(size), int(macs), *(int(r) for r in rest[:1]))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["val_metric"] = None if math.isnan(self.val_metric) else self.val_metric  # strict JSON
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evaluation:
        d = dict(d)
        d["val_metric"] = math.nan if d.get("val_metric") is None else d["val_metric"]
        return cls(**d)


@dataclass(frozen=True)
class Budgets:
    """The budgets of one search; None: no budget of that kind."""

    max_latency_ms: float | None = None  # batch-1 p50
    max_size_mb: float | None = None  # the deployable file, MiB
    max_metric_drop: float | None = 0.01  # val metric >= teacher_metric - this (negative: must beat the teacher)
    teacher_metric: float | None = None  # the teacher's val metric (required with max_metric_drop)
    metric_range: tuple[float, float] = (0.0, 1.0)  # what the metric can reach (AUC, accuracy)

    def check(self) -> None:
        """Refuse, in one line, a budget nothing could ever meet or that is not a number."""
        lat, size, drop, teacher = self.max_latency_ms, self.max_size_mb, self.max_metric_drop, self.teacher_metric
        if lat is not None:
            if not _number(lat) or lat <= 0:
                raise InputError(f"--max-latency-ms {lat!r} is impossible: a latency budget must be a positive number "
                                 "of milliseconds (e.g. 0.5)")
            if lat < MIN_LATENCY_MS:
                raise InputError(f"--max-latency-ms {lat:g} is below anything measurable ({MIN_LATENCY_MS:g} ms, one "
                                 "microsecond): give a budget of at least a few microseconds, e.g. 0.1")
        if size is not None:
            if not _number(size) or size <= 0:
                raise InputError(f"--max-size-mb {size!r} is impossible: a size budget must be a positive number "
                                 "of MiB (e.g. 2)")
            if size < MIN_SIZE_MB:
                raise InputError(f"--max-size-mb {size:g} is smaller than any model file ({MIN_SIZE_MB:g} MiB): "
                                 "give e.g. 0.5")
        if drop is not None:
            if not _number(drop) or not -1 <= drop <= 1:
                raise InputError(f"--max-auc-drop {drop!r} must be a number in [-1, 1] (e.g. 0.01; negative: the "
                                 "student must beat the teacher)")
            if teacher is None or not _number(teacher):
                raise InputError(f"a metric budget needs the teacher's val metric, got {teacher!r}: evaluate the "
                                 "teacher first (or pass max_metric_drop=None)")
            hi = self.metric_range[1]
            if teacher - drop > hi:
                raise InputError(f"--max-auc-drop {drop:g} is impossible: it asks for a val metric of at least "
                                 f"{teacher - drop:.4f} (teacher {teacher:.4f} - {drop:g}), above the metric's maximum "
                                 f"{hi:g}; use a drop >= {teacher - hi:.4f}")

    @property
    def metric_floor(self) -> float | None:
        if self.max_metric_drop is None or self.teacher_metric is None:
            return None
        return self.teacher_metric - self.max_metric_drop

    def violations(self, ev: Evaluation) -> list[str]:
        """The budgets ``ev`` misses, each as a few words (empty: inside every budget)."""
        out = []
        floor = self.metric_floor
        if floor is not None and not (ev.val_metric >= floor):
            out.append(f"val metric {ev.val_metric:.4f} < {floor:.4f}")
        if self.max_latency_ms is not None and not (ev.latency_ms <= self.max_latency_ms):
            out.append(f"latency {ev.latency_ms:.3f} ms > {self.max_latency_ms:g} ms")
        if self.max_size_mb is not None and ev.size_bytes > self.max_size_mb * MIB:
            out.append(f"size {ev.size_bytes / MIB:.2f} MiB > {self.max_size_mb:g} MiB")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["metric_range"] = list(self.metric_range)
        return d


def objective(ev: Evaluation, budgets: Budgets) -> float:
    """The number Optuna minimises for one report (see the module text)."""
    lat = ev.latency_ms if _number(ev.latency_ms) and ev.latency_ms > 0 else math.inf
    value = math.log(max(lat, MIN_LATENCY_MS)) if math.isfinite(lat) else 1e6
    missed = 0.0
    floor = budgets.metric_floor
    if floor is not None:
        metric = ev.val_metric if _number(ev.val_metric) else budgets.metric_range[0]
        scale = max(abs(budgets.max_metric_drop), METRIC_SCALE_MIN)
        missed += max(0.0, floor - metric) / scale
    if budgets.max_latency_ms is not None and lat > budgets.max_latency_ms:
        missed += math.log(lat / budgets.max_latency_ms) if math.isfinite(lat) else 1e3
    if budgets.max_size_mb is not None and ev.size_bytes > budgets.max_size_mb * MIB:
        missed += math.log(ev.size_bytes / (budgets.max_size_mb * MIB))
    return value + (INFEASIBLE + PENALTY * missed if budgets.violations(ev) else 0.0)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (latency, metric) no other point dominates (lower-or-equal latency and
    higher-or-equal metric, one of them strictly), in order of latency. Equal points are all kept;
    a point with a NaN figure is never on the front."""
    ok = [i for i, (lat, met) in enumerate(points) if _number(lat) and _number(met)]
    front = []
    for i in ok:
        li, mi = points[i]
        dominated = any(points[j][0] <= li and points[j][1] >= mi and (points[j][0] < li or points[j][1] > mi)
                        for j in ok if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1], i))


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
