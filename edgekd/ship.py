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

    key, label = "auc", "AUC"  # the metric the floor is on, as report keys and as text

    def auc_ok(self, m: Metrics) -> bool:
        return bool(self.figures(m)[0] >= self.min_auc)

    metric_ok = auc_ok

    def record(self) -> dict:
        """The floors as report.json "shipping" fields (``teacher_val_auc``, ``min_val_auc``, ...)."""
        p = "" if self.split == "test" else "val_"
        return {f"teacher_{p}auc": self.teacher_auc, f"min_{p}auc": self.min_auc,
                f"teacher_{p}sensitivity": self.teacher_sensitivity, f"min_{p}sensitivity": self.min_sensitivity}

    def chosen(self, m: Metrics) -> dict:
        auc, sens = self.figures(m)
        return {"auc": auc, "sensitivity": sens}

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
    auc_ok = [c for c in deployable if c.metrics is not None and val.metric_ok(c.metrics)]
    eligible = [c for c in auc_ok if val.sensitivity_ok(c.metrics)]
    robust = robust or RobustFloor.of("val", None, None)
    rejected_robust = [c for c in eligible if not robust.ok(c)]  # inside the other budgets, outside this one
    eligible = [c for c in eligible if c not in rejected_robust]
    budget = val.text(max_drop, max_sensitivity_drop) + robust.text()
    info = {
        "chosen_on": "val",
        "rule": f"fastest {profile.runtime} student with {budget}",
        **val.record(),
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
    info["chosen"], info["val"] = chosen.name, val.chosen(chosen.metrics)
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
    rec = val.record()
    floor, teacher = rec[f"min_val_{val.key}"], rec[f"teacher_val_{val.key}"]
    return (f"no {profile.runtime} candidate reached val {val.label} {floor:.4f} (teacher {teacher:.4f} − {max_drop}); "
            + (f"best was {best.name} at {val.figures(best.metrics)[0]:.4f}" if best else "no deployable candidate"))


@dataclass(frozen=True)
class DiceFloors:
    """The segmentation budget on one split: mean Dice >= the teacher's − ``max_dice_drop`` (no sensitivity rule)."""

    split: str
    teacher_dice: float
    min_dice: float
    min_sensitivity = None
    key, label = "dice", "Dice"

    @classmethod
    def of(cls, split: str, teacher_dice: float | None, max_drop: float) -> "DiceFloors":
        d = float("nan") if teacher_dice is None else float(teacher_dice)
        return cls(split, d, d - max_drop)

    def figures(self, m) -> tuple[float, float]:
        d = m.dice if self.split == "test" else m.val_dice
        return (float("nan") if d is None else float(d)), float("nan")

    def metric_ok(self, m) -> bool:
        return bool(self.figures(m)[0] >= self.min_dice)

    def sensitivity_ok(self, m) -> bool:
        return True

    def record(self) -> dict:
        p = "" if self.split == "test" else "val_"
        return {f"teacher_{p}dice": self.teacher_dice, f"min_{p}dice": self.min_dice}

    def chosen(self, m) -> dict:
        return {"dice": self.figures(m)[0]}

    def text(self, max_drop: float, max_sensitivity_drop: float | None = None) -> str:
        return f"{self.split} mean Dice >= teacher {self.split} mean Dice - {max_drop}"

    def describe(self, m) -> str:
        return (f"{self.split} mean Dice {self.figures(m)[0]:.4f} (teacher {self.teacher_dice:.4f}, "
                f"floor {self.min_dice:.4f})")


def choose_segmentation(cands: list[Candidate], profile: TargetProfile, teacher, max_dice_drop: float
                        ) -> tuple[Candidate | None, dict]:
    """The fastest deployable student with val mean Dice >= the teacher's − ``max_dice_drop``, confirmed once on test.

    The rule of :func:`choose_shipped` with Dice in place of AUC and sensitivity: chosen on val,
    only that model is then checked on test, and nothing ships when it fails there.
    """
    val = DiceFloors.of("val", teacher.val_dice, max_dice_drop)
    test = DiceFloors.of("test", teacher.dice, max_dice_drop)
    chosen, info = choose_on_val(cands, profile, val, max_dice_drop, None)
    info.update({**test.record(), "max_dice_drop": max_dice_drop})
    info["rule"] += f"; then only that model is confirmed on test: {test.text(max_dice_drop)}"
    if chosen is None:
        return None, info
    dice = test.figures(chosen.metrics)[0]
    ok = test.metric_ok(chosen.metrics)
    info["confirmation"] = {"on": "test", "candidate": chosen.name, "dice": dice, "min_dice": test.min_dice,
                            "dice_ok": ok, "confirmed": ok}
    info["confirmed"] = ok
    if not ok:
        info["reason"] = (f"{chosen.name} was chosen on val ({val.describe(chosen.metrics)}) but not confirmed "
                          f"on test: {test.describe(chosen.metrics)}; no other candidate is tried on test")
        return None, info
    info["reason"] += f"; confirmed on test: {test.describe(chosen.metrics)}"
    return chosen, info


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

