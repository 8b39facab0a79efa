"""A latency model for targets the host cannot time (TensorRT engines are built and run on the device).

    latency_ms ≈ a · MMACs + b · layers + c        (a, b, c >= 0)

fitted by non-negative least squares on points measured on the device (batch-1 p50 from the
bundle's runner, folded into a report with ``edgekd report --merge``). MACs carry the compute;
the layer count carries the per-layer launch and dispatch cost that dominates small models at
medical image sizes. With three unknowns the fit needs at least three points; its residuals are
kept and reported, and a search ranked by it says its latencies are *predicted*.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError

TERMS = ("ms_per_mmac", "ms_per_layer", "ms_fixed")


@dataclass(frozen=True)
class LatencyPoint:
    macs: int
    layers: int
    ms: float
    name: str = ""  # what was measured (a candidate's name)


@dataclass
class LatencyModel:
    ms_per_mmac: float  # milliseconds per million multiply-accumulates
    ms_per_layer: float  # milliseconds per convolution / linear layer
    ms_fixed: float  # milliseconds per call regardless of the model
    points: list[LatencyPoint] = field(default_factory=list)  # what it was fitted on
    residuals_ms: list[float] = field(default_factory=list)  # measured - predicted, per point
    source: str = ""  # where the points came from

    @classmethod
    def fit(cls, points: Sequence[LatencyPoint | tuple], *, source: str = "") -> LatencyModel:
        """Non-negative least squares of ``ms`` on (MMACs, layers, 1); at least 3 points."""
        pts = [p if isinstance(p, LatencyPoint) else LatencyPoint(*p) for p in points]
        if len(pts) < len(TERMS):
            raise InputError(f"a latency model needs at least {len(TERMS)} measured points (macs, layers, ms), got "
                             f"{len(pts)}: measure more candidates on the device and merge them (edgekd report --merge)")
        for p in pts:
            if not (p.macs >= 0 and p.layers >= 0 and math.isfinite(p.ms) and p.ms > 0):
                raise InputError(f"latency point {p} must have macs >= 0, layers >= 0 and a positive finite ms")
        x = np.array([[p.macs / 1e6, p.layers, 1.0] for p in pts], dtype=np.float64)
        y = np.array([p.ms for p in pts], dtype=np.float64)
        coef = _nnls(x, y)
        model = cls(*(float(c) for c in coef), points=pts, source=source)
        model.residuals_ms = [float(r) for r in y - x @ coef]
        return model

    def predict(self, macs: float, layers: float) -> float:
        return self.ms_per_mmac * macs / 1e6 + self.ms_per_layer * layers + self.ms_fixed

    @property
    def rmse_ms(self) -> float:
        r = np.asarray(self.residuals_ms)
        return float(np.sqrt(np.mean(r ** 2))) if len(r) else math.nan

    @property
    def max_rel_residual(self) -> float:
        """The worst |measured - predicted| / measured over the fitted points."""
        rel = [abs(r) / p.ms for r, p in zip(self.residuals_ms, self.points)]
        return max(rel) if rel else math.nan

    def text(self) -> str:
        """One line for the report: the formula, what it was fitted on, how well it fits."""
        return (f"predicted latency = {self.ms_per_mmac:.4g} ms/MMAC x MMACs + {self.ms_per_layer:.4g} ms x layers + "
                f"{self.ms_fixed:.4g} ms, least squares on {len(self.points)} measured points"
                + (f" from {self.source}" if self.source else "")
                + f" (RMS residual {self.rmse_ms:.3g} ms, worst {self.max_rel_residual:.0%})")

    def to_dict(self) -> dict[str, Any]:
        return {"formula": "ms_per_mmac * macs / 1e6 + ms_per_layer * layers + ms_fixed",
                "ms_per_mmac": self.ms_per_mmac, "ms_per_layer": self.ms_per_layer, "ms_fixed": self.ms_fixed,
                "points": [{"name": p.name, "macs": p.macs, "layers": p.layers, "ms": p.ms,
                            "predicted_ms": self.predict(p.macs, p.layers), "residual_ms": r}
                           for p, r in zip(self.points, self.residuals_ms)],
                "rmse_ms": self.rmse_ms, "max_rel_residual": self.max_rel_residual, "source": self.source,
                "text": self.text()}


def points_from_report(report: dict, layers: dict[str, int] | None = None) -> list[LatencyPoint]:
    """(macs, layers, p50 ms) of every device measurement merged into ``report`` (report.json as a dict).

    MACs come from the measured candidate's record; layers from its ``"layers"`` field, else from
    ``layers`` (candidate name -> count). Several measurements of one candidate each count.
    """
    cands = {c["name"]: c for c in report.get("candidates", [])}
    out = []
    for m in report.get("device_measurements", []):
        name = m.get("candidate")
        c = cands.get(name)
        if c is None or not c.get("macs"):
            raise InputError(f"device measurement of '{name}' has no candidate with MACs in the report")
        n = c.get("layers", (layers or {}).get(name))
        if n is None:
            raise InputError(f"the report has no layer count for '{name}': pass layers={{'{name}': N}} "
                             "(edgekd.lowrank.layer_count of the model)")
        out.append(LatencyPoint(int(c["macs"]), int(n), float(m["latency_ms"]["p50"]), name))
    return out


def _nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0: the best of the unconstrained fits on each subset of
    columns whose coefficients all come out non-negative (exact for three columns)."""
    best, best_err = np.zeros(x.shape[1]), float(np.sum(y ** 2))
    for k in range(1, x.shape[1] + 1):
        for cols in itertools.combinations(range(x.shape[1]), k):
            sub = x[:, cols]
            coef, *_ = np.linalg.lstsq(sub, y, rcond=None)
            if np.any(coef < 0):
                continue
            err = float(np.sum((y - sub @ coef) ** 2))
            if err < best_err - 1e-15:
                best = np.zeros(x.shape[1])
                best[list(cols)] = coef
                best_err = err
    return best
