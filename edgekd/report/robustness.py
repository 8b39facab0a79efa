"""report.json's "robustness" section, and its table in report.md and report.html.

The section holds, for the teacher and every deployable student evaluated, the metric clean and
under each shift and severity on test (and on val when a ``max_robust_drop`` budget chose on it),
the drop from clean and the mean drop, with each shift's exact description (``edgekd.robust.shifts``).
"""
from __future__ import annotations

from typing import Any

RULE = ("drop = clean metric − metric under the shift (positive: worse); mean drop = mean over every shift and "
        "severity; max_robust_drop: a student's mean drop may exceed the teacher's by at most this (val for the "
        "choice, test to confirm)")


def robustness_section(robust: Any, cands: list, shipped: Any, ship_info: dict) -> dict | None:
    """report.json "robustness" (None when it was not evaluated: ``bench.robust_images`` = 0)."""
    if robust is None:
        return None
    by = {c.name: c for c in cands}
    return {
        "metric": robust.metric, "seed": robust.seed, "images": robust.images, "available": robust.available,
        "subset": ("all images of a split, or a seeded sorted sample of bench.robust_images of them (by default "
                   "512 for classification, 64 for segmentation)"),
        "seconds": robust.seconds, "rule": RULE,
        "teacher": robust.evaluated[0], "teacher_scored_by": robust.teacher_scored_by or robust.evaluated[0],
        "shipped": shipped.name if shipped else None,
        "shown": _shown(robust.evaluated, shipped, ship_info),
        "max_robust_drop": ship_info.get("max_robust_drop"),
        "rejected_for_robustness": ship_info.get("rejected_for_robustness", []),
        "shifts": [s.to_dict() for s in robust.shifts],
        "candidates": {n: {split: r.to_dict() for split, r in (by[n].robustness or {}).items()} for n in robust.evaluated},
    }


def _shown(evaluated: tuple[str, ...], shipped: Any, ship_info: dict) -> str | None:
    """The student set against the teacher in the table and plot: the shipped one, else the one chosen on val,
    else the first evaluated."""
    if shipped is not None:
        return shipped.name
    if ship_info.get("chosen") in evaluated:
        return ship_info["chosen"]
    return evaluated[1] if len(evaluated) > 1 else None


def table_rows(section: dict, split: str = "test") -> list[tuple[str, str, str, dict | None, dict | None]]:
    """(shift, severity, parameter text, teacher score, shown score) per row, the clean row first."""
    cands = section["candidates"]
    t = cands.get(section["teacher"], {}).get(split)
    s = cands.get(section.get("shown") or "", {}).get(split)
    rows = [("clean", "—", "—", _clean(t), _clean(s))]
    for i, sh in enumerate(section["shifts"]):  # scores follow section["shifts"]
        rows.append((sh["name"], str(sh["severity"]), f"{sh['parameter']} {sh['value']:g}",
                     t["scores"][i] if t else None, s["scores"][i] if s else None))
    return rows


def _clean(r: dict | None) -> dict | None:
    return None if r is None else {"metric": r["clean"], "drop": 0.0}


def _f(v: float | None, spec: str = ".4f") -> str:
    return "—" if v is None else format(v, spec)


def markdown(report: dict) -> list[str]:
    sec = report.get("robustness")
    if not sec:
        return []
    teacher, shown, metric = sec["teacher"], sec.get("shown"), sec["metric"].upper()
    cands = sec["candidates"]
    lines = ["", "## Robustness under acquisition shift", "",
             f"{metric} of `{teacher}` and `{shown or '—'}` on test ({sec['images'].get('test')} of "
             f"{sec['available'].get('test')} images, seed {sec['seed']}) clean and under each shift; {RULE}. "
             f"Evaluated in {sec['seconds']:.1f} s. max_robust_drop: {sec.get('max_robust_drop')}"
             + (f"; rejected for robustness: {', '.join(sec['rejected_for_robustness'])}"
                if sec.get("rejected_for_robustness") else ""), "",
             f"| shift | severity | parameter | teacher {metric} | teacher drop | {shown or '—'} {metric} | drop |",
             "|---|---|---|---|---|---|---|"]
    for name, sev, par, t, s in table_rows(sec):
        lines.append(f"| {name} | {sev} | {par} | {_f(t and t['metric'])} | {_f(t and t['drop'], '+.4f')} | "
                     f"{_f(s and s['metric'])} | {_f(s and s['drop'], '+.4f')} |")
    with_val = any("val" in r for r in cands.values())  # scored on val only when a budget chose on it
    lines += ["", "| candidate |" + (" val mean drop |" if with_val else "") + " test mean drop | worst (test) |",
              "|---|" + ("---|" if with_val else "") + "---|---|"]
    for name, r in cands.items():
        lines.append(f"| {name} | " + (f"{_f((r.get('val') or {}).get('mean_drop'), '+.4f')} | " if with_val else "")
                     + f"{_f((r.get('test') or {}).get('mean_drop'), '+.4f')} | {(r.get('test') or {}).get('worst') or '—'} |")
    lines += ["", "Shifts (each applied to the preprocessed images as stated):", ""]
    lines += [f"- `{s['name']}@{s['severity']}`: {s['description']}" for s in sec["shifts"]]
    return lines
