"""``max_robust_drop`` as a shipping rule: a student may lose under shift at most this much more than the teacher.

On one split, a candidate's mean drop under shift (:attr:`Robustness.mean_drop`, the mean over
every shift and severity of clean metric − shifted metric) must stay <= the teacher's mean drop on
that split + ``max_robust_drop``. Like the AUC and sensitivity budgets it is applied on val for
the choice and confirmed once on test (:mod:`edgekd.ship`). Off (``None``) by default.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def mean_drop(robust: dict | None, split: str) -> float:
    """The mean drop on ``split`` of a ``{"val": Robustness, "test": Robustness}`` (NaN when not measured)."""
    r = (robust or {}).get(split)
    return float("nan") if r is None else float(r.mean_drop)


@dataclass(frozen=True)
class RobustFloor:
    """The robustness budget on one split: the ceiling on a candidate's mean drop under shift."""

    split: str  # "val" (choice) or "test" (confirmation)
    max_robust_drop: float | None  # None: no robustness rule
    teacher_mean_drop: float  # NaN when the teacher was not measured
    max_mean_drop: float | None  # teacher_mean_drop + max_robust_drop; None when there is no rule

    @classmethod
    def of(cls, split: str, teacher_robustness: dict | None, max_robust_drop: float | None) -> RobustFloor:
        t = mean_drop(teacher_robustness, split)
        return cls(split, max_robust_drop, t, None if max_robust_drop is None else t + max_robust_drop)

    @property
    def active(self) -> bool:
        return self.max_mean_drop is not None

    def figure(self, cand: Any) -> float:
        return mean_drop(getattr(cand, "robustness", None), self.split)

    def ok(self, cand: Any) -> bool:
        """Inside the budget; a candidate not measured under shift is not shown robust, so not ok."""
        return not self.active or bool(self.figure(cand) <= self.max_mean_drop)

    def text(self) -> str:
        s = self.split
        return (f" and {s} mean drop under shift <= teacher's {s} mean drop + {self.max_robust_drop}"
                if self.active else "")

    def describe(self, cand: Any) -> str:
        if not self.active:
            return ""
        d = self.figure(cand)
        shown = "not measured" if math.isnan(d) else f"{d:+.4f}"
        return (f", {self.split} mean drop under shift {shown} (teacher {self.teacher_mean_drop:+.4f}, "
                f"ceiling {self.max_mean_drop:+.4f})")

    def refused(self, runtime: str, rejected: list[Any]) -> str:
        """The not-shipped reason when every candidate inside the other budgets fell to this one."""
        best = min(rejected, key=lambda c: _nan_last(self.figure(c)))
        return (f"no {runtime} candidate inside the AUC and sensitivity budgets kept its {self.split} mean drop under "
                f"shift <= {self.max_mean_drop:+.4f} (teacher {self.teacher_mean_drop:+.4f} + {self.max_robust_drop}); "
                f"best was {best.name}{self.describe(best)}")

    def confirmation(self, cand: Any) -> dict:
        return {"robust_mean_drop": self.figure(cand), "max_robust_mean_drop": self.max_mean_drop,
                "robust_ok": self.ok(cand)}


def _nan_last(v: float) -> float:
    return math.inf if math.isnan(v) else v
