"""What the search may choose: the student, the depth and channels to prune, low rank, precision.

Every dimension is a finite list of choices (Optuna's categorical parameters), so a
configuration is a small frozen record, the space has a known size, and a configuration met
twice is the same key in the evaluation journal (:mod:`edgekd.search.study`).
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import InputError

FROM_TEACHER = "from-teacher"  # as edgekd.prune.derived.FROM_TEACHER (not imported: this module needs no torch)
MAX_PRUNE_RATIO = 0.95  # as edgekd.prune.pruner.MAX_RATIO


@dataclass(frozen=True)
class Config:
    """One point of the space: what the pipeline builds and times for it."""

    student: str  # a zoo / timm name, or "from-teacher"
    prune_depth: int | None  # whole blocks removed (None: the pruner's default, half of the removable ones)
    prune_ratio: float  # fraction of MACs removed by channel pruning (0: none)
    lowrank_energy: float | None  # truncated-SVD energy kept (None: no low-rank factorization)
    precision: str  # "fp32", "fp16", "int8", ...

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        return cls(**{f.name: d[f.name] for f in fields(cls)})

    def label(self) -> str:
        """Short and unique: ``lcnet_100 d6 r0.9 lr- int8``."""
        depth = "auto" if self.prune_depth is None else str(self.prune_depth)
        lr = "-" if self.lowrank_energy is None else f"{self.lowrank_energy:g}"
        return f"{self.student} d{depth} r{self.prune_ratio:g} lr{lr} {self.precision}"


@dataclass(frozen=True)
class SearchSpace:
    """The choices of each dimension, in the order Optuna is told them."""

    students: tuple[str, ...] = (FROM_TEACHER, "lcnet_100")
    prune_depths: tuple[int | None, ...] = (0, 3, 6)
    prune_ratios: tuple[float, ...] = (0.0, 0.5, 0.75, 0.9)
    lowrank_energies: tuple[float | None, ...] = (None,)  # None alone: low rank is not searched
    precisions: tuple[str, ...] = ("fp32", "int8")

    DIMENSIONS = ("students", "prune_depths", "prune_ratios", "lowrank_energies", "precisions")

    def check(self) -> None:
        """InputError (one line) for an empty dimension, a duplicate or an out-of-range choice."""
        from ..targets import PRECISIONS

        for dim in self.DIMENSIONS:
            values = getattr(self, dim)
            if not isinstance(values, tuple) or not values:
                raise InputError(f"search space '{dim}' must be a non-empty tuple of choices, got {values!r}")
            if len(set(values)) != len(values):
                raise InputError(f"search space '{dim}' lists a choice twice: {list(values)}")
        for s in self.students:
            if not isinstance(s, str) or not s:
                raise InputError(f"search space student {s!r} must be a zoo or timm name, or '{FROM_TEACHER}'")
        for d in self.prune_depths:
            if d is not None and (not isinstance(d, int) or isinstance(d, bool) or not 0 <= d <= 64):
                raise InputError(f"search space prune depth {d!r} must be an integer in [0, 64] or None (auto)")
        for r in self.prune_ratios:
            if not isinstance(r, (int, float)) or isinstance(r, bool) or not 0 <= r < MAX_PRUNE_RATIO:
                raise InputError(f"search space prune ratio {r!r} must be in [0, {MAX_PRUNE_RATIO})")
        for e in self.lowrank_energies:
            if e is not None and (not isinstance(e, (int, float)) or isinstance(e, bool) or not 0 < e <= 1):
                raise InputError(f"search space low-rank energy {e!r} must be in (0, 1] or None (no low rank)")
        for p in self.precisions:
            if p not in PRECISIONS:
                raise InputError(f"search space precision {p!r} is not one of {', '.join(PRECISIONS)}")

    @property
    def size(self) -> int:
        return math.prod(len(getattr(self, d)) for d in self.DIMENSIONS)

    def to_dict(self) -> dict[str, list]:
        return {d: list(getattr(self, d)) for d in self.DIMENSIONS}

    def suggest(self, trial: Any) -> Config:
        """The trial's configuration (Optuna categorical parameters; None is a valid choice)."""
        return Config(
            student=trial.suggest_categorical("student", list(self.students)),
            prune_depth=trial.suggest_categorical("prune_depth", list(self.prune_depths)),
            prune_ratio=trial.suggest_categorical("prune_ratio", list(self.prune_ratios)),
            lowrank_energy=trial.suggest_categorical("lowrank_energy", list(self.lowrank_energies)),
            precision=trial.suggest_categorical("precision", list(self.precisions)),
        )

    def contains(self, c: Config) -> bool:
        return (c.student in self.students and c.prune_depth in self.prune_depths and c.prune_ratio in self.prune_ratios
                and c.lowrank_energy in self.lowrank_energies and c.precision in self.precisions)


def default_space(profile: Any, *, lowrank: bool = False, students: tuple[str, ...] | None = None) -> SearchSpace:
    """The default space for a target profile: the teacher's own network cut down and the profile's zoo
    student; depth 0/3/6; channel ratios 0–0.9; the profile's precisions; low rank only when asked
    (``lowrank=True`` adds energies 0.9 and 0.75: kept out of the default until it is measured to win)."""
    if students is None:
        students = tuple(dict.fromkeys((FROM_TEACHER, profile.default_student)))
    return SearchSpace(students=students, prune_depths=(0, 3, 6), prune_ratios=(0.0, 0.5, 0.75, 0.9),
                       lowrank_energies=(None, 0.9, 0.75) if lowrank else (None,),
                       precisions=tuple(profile.precisions))


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([hms])")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str | float) -> float:
    """Seconds in ``30m``, ``1h``, ``900s``, ``1h30m`` or ``90s``. A bare number is refused (which unit?)."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise InputError(f"search budget {text!r} needs a unit: 900s, 30m or 1h")
    s = text.strip().lower()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        hint = " (add a unit)" if re.fullmatch(r"\d+(\.\d+)?", s) else ""
        raise InputError(f"search budget '{text}' is not a duration{hint}: use e.g. 900s, 30m, 1h or 1h30m")
    if total <= 0:
        raise InputError(f"search budget '{text}' must be more than 0 seconds: e.g. 30m")
    return total
