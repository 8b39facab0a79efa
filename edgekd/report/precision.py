"""Precision is chosen by measurement: say, per runtime, whether the quantized student is faster.

INT8 pays off for compute-heavy models and can be slower than fp32 for tiny ones (the
quantize/dequantize work outweighs the cheaper arithmetic; see benchmarks/README.md). The
shipping rule already takes the fastest student inside the accuracy budget; these notes make the
comparison explicit in ``report.json`` (``precision_notes``) and ``report.md``, one per runtime and
lower precision, measured in the same run on the same machine.
"""
from __future__ import annotations

from typing import Any

REFERENCE = "fp32"
LOWER = ("int8", "bf16", "fp16")


def precision_notes(cands: list[Any], profile: Any, shipped: Any, min_auc: float | None = None) -> list[dict]:
    """One note per (runtime, lower precision) with both it and an fp32 student timed in this run.

    ``cands`` are :class:`edgekd.measure.candidates.Candidate` (metrics and latency measured),
    ``profile`` the target profile, ``shipped`` the shipped candidate or None, ``min_auc`` the
    AUC floor of the shipping rule (used to say why a faster precision did not ship).
    """
    timed = [c for c in cands if c.role == "student" and c.stage == "lower" and c.latency is not None]
    notes = []
    for backend in dict.fromkeys(c.backend for c in timed):
        by = {c.precision: c for c in timed if c.backend == backend}
        ref = by.get(REFERENCE)
        if ref is None:
            continue
        for prec in (p for p in LOWER if p in by):
            notes.append(_note(by[prec], ref, profile, shipped, min_auc))
    return notes


def _note(low: Any, ref: Any, profile: Any, shipped: Any, min_auc: float | None) -> dict:
    ratio = low.latency.p50 / ref.latency.p50
    noise = (_ci(low) + _ci(ref)) or 0.0
    tie = abs(ratio - 1) <= noise
    slower = ratio > 1 and not tie
    on_target = low.backend == profile.runtime
    if tie:
        verdict = f"{low.precision.upper()} is about as fast as fp32"
    elif slower:
        verdict = f"{low.precision.upper()} is {ratio:.2f}× SLOWER than fp32"
    else:
        verdict = f"{low.precision.upper()} is {1 / ratio:.2f}× faster than fp32"
    text = (f"{low.backend}: {verdict} on this machine (p50 {low.latency.p50:.3f} ms vs "
            f"{ref.latency.p50:.3f} ms, batch 1, {low.latency.threads} threads)")
    if on_target:
        text += "; " + _shipping_text(low, ref, shipped, min_auc)
    return {
        "runtime": low.backend, "precision": low.precision, "reference": REFERENCE,
        "candidate": low.name, "reference_candidate": ref.name,
        "p50_ms": low.latency.p50, "reference_p50_ms": ref.latency.p50, "ratio": ratio,
        "slower": slower, "tie": tie, "target_runtime": on_target,
        "shipped_precision": shipped.precision if on_target and shipped is not None else None,
        "note": text,
    }


def _shipping_text(low: Any, ref: Any, shipped: Any, min_auc: float | None) -> str:
    if shipped is None:
        return "nothing shipped (no candidate within the accuracy budget)"
    faster = min((low, ref), key=lambda c: c.latency.p50)
    if shipped.name == faster.name:
        return f"{faster.precision} ships: the faster of the two and within the accuracy budget"
    if shipped.name in (low.name, ref.name):
        auc = getattr(faster.metrics, "auc", None)
        why = (f"test AUC {auc:.4f} < floor {min_auc:.4f}" if auc is not None and min_auc is not None
               and auc < min_auc else "not eligible")
        return f"{shipped.precision} ships: the faster {faster.precision} is outside the accuracy budget ({why})"
    return f"{shipped.name} ships"


def _ci(c: Any) -> float:
    value = getattr(c.latency, "ci95_rel", None)
    return float(value) if value is not None and value == value else 0.0  # NaN -> 0
