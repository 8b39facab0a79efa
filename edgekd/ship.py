"""The shipping decision: the fastest deployable student inside the budgets on val, confirmed once on test.

The teacher's figures are the reference (:func:`teacher_reference`: the candidate with the
``baseline`` role that the budgets are measured against). A budget becomes :class:`Floors` on one
split; :func:`choose_shipped` chooses on val and confirms only the chosen model on test (no
fallback to another candidate, which would be choosing on test again).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import NotShippedError
from .measure.candidates import Candidate
from .metrics.classification import Metrics
from .robust.budget import RobustFloor
from .targets import TargetProfile

TEACHER_REFERENCES = ("teacher-torch-fp32", "teacher-onnxruntime-fp32")  # in order of preference


def teacher_reference(cands: list[Candidate]) -> Candidate:
    """The teacher the budgets and the speed-ups are measured against: its torch model when it is one,
    else the teacher's ONNX file in ONNX Runtime (both fp32: the teacher as it was given)."""
    by = {c.name: c for c in cands if c.role == "baseline"}
    for name in TEACHER_REFERENCES:
        if name in by:
            return by[name]
    raise ValueError("internal: no teacher baseline among the candidates")


@dataclass(frozen=True)
class Floors:
    """A budget turned into floors on one split's figures: AUC, and sensitivity when it applies."""

    split: str  # "val" (choice) or "test" (confirmation)
    teacher_auc: float
    min_auc: float
    teacher_sensitivity: float | None
    min_sensitivity: float | None  # None: no sensitivity rule (no budget, or the teacher's is undefined)

    @classmethod
    def of(cls, split: str, teacher_auc: float | None, max_drop: float, teacher_sensitivity: float | None,
           max_sensitivity_drop: float | None) -> "Floors":
        auc = float("nan") if teacher_auc is None else float(teacher_auc)
        sens_rule = max_sensitivity_drop is not None and teacher_sensitivity is not None \
            and not np.isnan(teacher_sensitivity)
        return cls(split, auc, auc - max_drop, teacher_sensitivity,
                   teacher_sensitivity - max_sensitivity_drop if sens_rule else None)

    def figures(self, m: Metrics) -> tuple[float, float]:
        """(AUC, sensitivity) of a candidate's metrics on this split (NaN when not measured)."""
        auc = m.auc if self.split == "test" else getattr(m, "val_auc", None)
        sens = m.sensitivity if self.split == "test" else getattr(m, "val_sensitivity", None)
        return (float("nan") if auc is None else auc), (float("nan") if sens is None else sens)

    def auc_ok(self, m: Metrics) -> bool:
        return bool(self.figures(m)[0] >= self.min_auc)

    def sensitivity_ok(self, m: Metrics) -> bool:
        return self.min_sensitivity is None or bool(self.figures(m)[1] >= self.min_sensitivity)

    def text(self, max_drop: float, max_sensitivity_drop: float | None) -> str:
        s = self.split
        return f"{s} AUC >= teacher {s} AUC - {max_drop}" + (
            f" and {s} sensitivity >= teacher {s} sensitivity - {max_sensitivity_drop}"
            if self.min_sensitivity is not None else "")

    def describe(self, m: Metrics) -> str:
        auc, sens = self.figures(m)
        text = f"{self.split} AUC {auc:.4f} (teacher {self.teacher_auc:.4f}, floor {self.min_auc:.4f})"
        if self.min_sensitivity is not None:
            text += (f", {self.split} sensitivity {sens:.4f} (teacher {self.teacher_sensitivity:.4f}, "
                     f"floor {self.min_sensitivity:.4f})")
        return text


def choose_shipped(cands: list[Candidate], profile: TargetProfile, teacher: Metrics, max_drop: float, *,
                   max_sensitivity_drop: float | None = None, max_robust_drop: float | None = None,
                   teacher_robustness: dict | None = None) -> tuple[Candidate | None, dict]:
    """The fastest deployable student inside both budgets **on val**, then confirmed once on test.

    ``teacher`` is the teacher's Metrics (``val_auc``/``val_sensitivity`` for the choice,
    ``auc``/``sensitivity`` for the confirmation). Eligible: val AUC >= teacher val AUC -
    ``max_drop`` and, when ``max_sensitivity_drop`` is given, val sensitivity >= teacher val
    sensitivity - ``max_sensitivity_drop``. Fastest by measured p50; device-built (TensorRT)
    targets take the profile's precision order. Only the chosen model is then checked on test
    against the same budgets: when that fails nothing ships (no fallback to another candidate,
    which would be choosing on test again). With ``max_robust_drop`` (off when None), a candidate's
    mean drop under shift (``Candidate.robustness``) must also stay <= the teacher's
    (``teacher_robustness``) + ``max_robust_drop``, on val for the choice and on test to confirm.
    """
    val = Floors.of("val", teacher.val_auc, max_drop, teacher.val_sensitivity, max_sensitivity_drop)
    test = Floors.of("test", teacher.auc, max_drop, teacher.sensitivity, max_sensitivity_drop)
    robust_val = RobustFloor.of("val", teacher_robustness, max_robust_drop)
    robust_test = RobustFloor.of("test", teacher_robustness, max_robust_drop)
    chosen, info = choose_on_val(cands, profile, val, max_drop, max_sensitivity_drop, robust=robust_val)
    info.update({
        "teacher_auc": test.teacher_auc, "min_auc": test.min_auc, "max_auc_drop": max_drop,
        "teacher_sensitivity": test.teacher_sensitivity, "min_sensitivity": test.min_sensitivity,
        "max_sensitivity_drop": max_sensitivity_drop,
        "max_robust_drop": max_robust_drop, "teacher_val_robust_mean_drop": robust_val.teacher_mean_drop,
        "max_val_robust_mean_drop": robust_val.max_mean_drop, "teacher_robust_mean_drop": robust_test.teacher_mean_drop,
        "max_robust_mean_drop": robust_test.max_mean_drop,
    })
    info["rule"] += (f"; then only that model is confirmed on test: {test.text(max_drop, max_sensitivity_drop)}"
                     f"{robust_test.text()}")
    if chosen is None:
        return None, info
    info["confirmation"] = confirm_on_test(chosen, test)
    if robust_test.active:
        info["confirmation"].update(robust_test.confirmation(chosen))
        info["confirmation"]["confirmed"] = info["confirmation"]["confirmed"] and robust_test.ok(chosen)
    info["confirmed"] = info["confirmation"]["confirmed"]
    if not info["confirmed"]:
        info["reason"] = (f"{chosen.name} was chosen on val ({val.describe(chosen.metrics)}{robust_val.describe(chosen)}) "
                          f"but not confirmed on test: {test.describe(chosen.metrics)}{robust_test.describe(chosen)}; "
                          "no other candidate is tried on test")
        return None, info
    info["reason"] += f"; confirmed on test: {test.describe(chosen.metrics)}{robust_test.describe(chosen)}"
    return chosen, info


def choose_on_val(cands: list[Candidate], profile: TargetProfile, val: Floors, max_drop: float,
                  max_sensitivity_drop: float | None, *, robust: RobustFloor | None = None) -> tuple[Candidate | None, dict]:
    """The shipping choice on val figures alone; the info dict says what was eligible and why."""
    from .lower import backend_info

    device_built = backend_info(profile.runtime).device_built  # engines are built and timed on the device only
    deployable = [c for c in cands if c.role == "student" and c.backend == profile.runtime
                  and c.precision in profile.precisions and (c.latency is not None or device_built)]
    auc_ok = [c for c in deployable if c.metrics is not None and val.auc_ok(c.metrics)]
    eligible = [c for c in auc_ok if val.sensitivity_ok(c.metrics)]
    robust = robust or RobustFloor.of("val", None, None)
    rejected_robust = [c for c in eligible if not robust.ok(c)]  # inside the other budgets, outside this one
    eligible = [c for c in eligible if c not in rejected_robust]
    budget = val.text(max_drop, max_sensitivity_drop) + robust.text()
    info = {
        "chosen_on": "val",
        "rule": f"fastest {profile.runtime} student with {budget}",
        "teacher_val_auc": val.teacher_auc, "min_val_auc": val.min_auc,
        "teacher_val_sensitivity": val.teacher_sensitivity, "min_val_sensitivity": val.min_sensitivity,
        "deployable": [c.name for c in deployable], "eligible": [c.name for c in eligible],
        "rejected_for_sensitivity": [c.name for c in auc_ok if c not in eligible and c not in rejected_robust],
        "rejected_for_robustness": [c.name for c in rejected_robust],
        "chosen": None, "val": None, "confirmation": None, "confirmed": False,
    }
    if not eligible:
        info["reason"] = (robust.refused(profile.runtime, rejected_robust) if rejected_robust
                          else _not_shipped_reason(profile, deployable, auc_ok, val, max_drop))
        return None, info
    if device_built:
        order = list(profile.precisions)
        chosen = min(eligible, key=lambda c: order.index(c.precision))
        info["rule"] = (f"{profile.runtime} engines cannot be built or timed on the host: the first precision in the "
                        f"profile's order {order} with {budget}")
        info["reason"] = (
            f"{chosen.precision} is the profile's preferred precision among {len(eligible)} eligible on val; "
            f"{val.describe(chosen.metrics)}{robust.describe(chosen)} measured with ONNX Runtime "
            f"on the file the engine is built from; device latency: run the bundle's runner and `edgekd report --merge`"
        )
    else:
        chosen = min(eligible, key=lambda c: c.latency.p50)
        info["reason"] = (f"fastest of {len(eligible)} eligible on val: p50 {chosen.latency.p50:.3f} ms, "
                          f"{val.describe(chosen.metrics)}{robust.describe(chosen)}")
    auc, sens = val.figures(chosen.metrics)
    info["chosen"], info["val"] = chosen.name, {"auc": auc, "sensitivity": sens}
    return chosen, info


def confirm_on_test(chosen: Candidate, test: Floors) -> dict:
    """The one look at test: does the val-chosen model keep both budgets there too?"""
    auc, sens = test.figures(chosen.metrics)
    auc_ok, sens_ok = test.auc_ok(chosen.metrics), test.sensitivity_ok(chosen.metrics)
    return {"on": "test", "candidate": chosen.name, "auc": auc, "min_auc": test.min_auc, "auc_ok": auc_ok,
            "sensitivity": sens, "min_sensitivity": test.min_sensitivity, "sensitivity_ok": sens_ok,
            "confirmed": auc_ok and sens_ok}


def _not_shipped_reason(profile: TargetProfile, deployable: list[Candidate], auc_ok: list[Candidate],
                        val: Floors, max_drop: float) -> str:
    """One line: which val budget no candidate met, and the best candidate against it."""
    if auc_ok:  # the AUC budget was met, sensitivity was not
        best = max(auc_ok, key=lambda c: val.figures(c.metrics)[1])
        auc, sens = val.figures(best.metrics)
        return (f"no {profile.runtime} candidate kept val sensitivity >= {val.min_sensitivity:.4f} "
                f"(teacher {val.teacher_sensitivity:.4f}); best inside the val AUC budget was {best.name} at "
                f"sensitivity {sens:.4f}, AUC {auc:.4f}")
    scored = [c for c in deployable if c.metrics is not None]
    best = max(scored, key=lambda c: np.nan_to_num(val.figures(c.metrics)[0], nan=-1.0), default=None)
    return (f"no {profile.runtime} candidate reached val AUC {val.min_auc:.4f} (teacher {val.teacher_auc:.4f} − {max_drop}); "
            + (f"best was {best.name} at {val.figures(best.metrics)[0]:.4f}" if best else "no deployable candidate"))


def speedups(cands: list[Candidate], shipped: Candidate | None) -> dict:
    """Shipped vs each teacher baseline, from figures measured in this run (none for device-built engines)."""
    if shipped is None or shipped.latency is None:
        return {}
    by = {c.name: c for c in cands}
    out = {}
    for base in ("teacher-torch-fp32", "teacher-onnxruntime-fp32", "teacher-openvino-fp32", "teacher-openvino-int8"):
        b = by.get(base)
        if b is not None and b.latency is not None:
            out[f"latency_vs_{base}"] = b.latency.p50 / shipped.latency.p50
        if b is not None and b.size_bytes and shipped.size_bytes and b.backend != "torch":
            out[f"size_vs_{base}"] = b.size_bytes / shipped.size_bytes
    return out



def not_shipped(ship_info: dict, out: Path) -> NotShippedError:
    """The one-line exit-3 error: why nothing shipped (nothing eligible on val, or the val choice not
    confirmed on test), and where the evidence was kept."""
    return NotShippedError(f"nothing shipped: {ship_info['reason']}; candidates and report kept in {out}")

