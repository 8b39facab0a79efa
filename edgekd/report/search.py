"""The search (``compress --search``) in the report: every configuration as a table row, and latency vs val metric as a plot."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..search.study import SearchResult, TrialRecord

HEADER = ["#", "student", "depth", "prune", "low rank", "precision", "state", "fidelity", "val metric",
          "latency ms", "size KiB", "MMACs", "budgets", ""]


def table_rows(result: SearchResult) -> list[list[str]]:
    """One row per configuration tried (header first), fastest full-fidelity ones first.

    The latency column's header says whether latencies were measured or predicted; the last
    column marks the shipped configuration and the Pareto front.
    """
    front = {t.number for t in result.front}
    chosen = result.chosen.number if result.chosen else None
    header = list(HEADER)
    header[9] = f"latency ms ({result.latency_kind})"
    rows = [header]
    for t in sorted(result.trials, key=_order):
        c, ev = t.config, t.evaluation
        mark = "shipped" if t.number == chosen else ("front" if t.number in front else "")
        rows.append([
            str(t.number), c.student, "auto" if c.prune_depth is None else str(c.prune_depth), f"{c.prune_ratio:g}",
            "-" if c.lowrank_energy is None else f"{c.lowrank_energy:g}", c.precision,
            t.state + (f" ({t.error})" if t.error else ""),
            "-" if t.fidelity is None else str(t.fidelity),
            _f(ev.val_metric if ev else None, 4), _f(ev.latency_ms if ev else None, 3),
            _f(ev.size_bytes / 1024 if ev else None, 0), _f(ev.macs / 1e6 if ev else None, 2),
            ("ok" if not t.violations else "; ".join(t.violations)) if ev else "-", mark,
        ])
    return rows


def markdown_table(result: SearchResult) -> str:
    """The table as GitHub markdown, with a line on the time spent and why the chosen one won."""
    rows = table_rows(result)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in r) + " |" for r in rows[1:]]
    lines += ["", spent_line(result) + ".", "", result.reason + "."]
    if result.latency_kind == "predicted" and result.latency_model:
        lines += ["", "Latencies are **predicted**, not measured: " + result.latency_model["text"] + "."]
    return "\n".join(lines) + "\n"


def spent_line(result: SearchResult) -> str:
    """How much of the space was tried, in how long, and how many evaluations ran or came from the journal."""
    return (f"{len(result.trials)} of {result.space.size} configurations in {result.seconds_total:.0f} s "
            f"(budget {result.budget_s:.0f} s, stopped: {result.stopped}); "
            f"{result.evaluations_run} evaluations run, {result.evaluations_reused} reused")


def fig_search(result: SearchResult):
    """Val metric vs latency: every evaluated configuration (hollow: stopped before full fidelity),
    the Pareto front joined, the shipped one starred, the budgets as dashed lines."""
    from .plots import (
        FRONT_COLOR,
        SHIPPED_COLOR,
        STUDENT_COLOR,
        TEACHER_COLOR,
        _plt,
    )

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    full = [t for t in result.trials if t.full and t.evaluation is not None]
    partial = [t for t in result.trials if not t.full and t.evaluation is not None]
    if partial:
        ax.scatter([t.evaluation.latency_ms for t in partial], [_y(t) for t in partial], s=18, facecolors="none",
                   edgecolors=TEACHER_COLOR, label="stopped early (lower fidelity)")
    if full:
        ax.scatter([t.evaluation.latency_ms for t in full], [_y(t) for t in full], s=26, color=STUDENT_COLOR,
                   label="full fidelity")
    if result.front:
        ax.plot([t.evaluation.latency_ms for t in result.front], [_y(t) for t in result.front], "-o",
                color=FRONT_COLOR, ms=4, label="Pareto front")
    if result.chosen is not None:
        ax.scatter([result.chosen.evaluation.latency_ms], [_y(result.chosen)], marker="*", s=220,
                   color=SHIPPED_COLOR, zorder=5, label=f"shipped: {result.chosen.config.label()}")
    b = result.budgets
    if b.metric_floor is not None:
        ax.axhline(b.metric_floor, ls="--", lw=1, color=TEACHER_COLOR, label=f"metric floor {b.metric_floor:.4f}")
    if b.max_latency_ms is not None:
        ax.axvline(b.max_latency_ms, ls=":", lw=1, color=TEACHER_COLOR, label=f"latency budget {b.max_latency_ms:g} ms")
    ax.set_xscale("log")
    ax.set_xlabel(f"batch-1 latency, ms ({result.latency_kind})")
    ax.set_ylabel("val metric")
    ax.set_title("search: latency vs val metric" + (" (latency PREDICTED)" if result.latency_kind == "predicted"
                                                      else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_search(result: SearchResult, path: Path, dpi: int = 110) -> Path:
    """:func:`fig_search` saved as a PNG at ``path``."""
    from .plots import _plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = fig_search(result)
    fig.savefig(path, format="png", dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    return path


def _order(t: TrialRecord) -> tuple:
    lat = t.evaluation.latency_ms if t.evaluation is not None else math.inf
    return (not t.full, lat, t.number)


def _y(t: TrialRecord) -> float:
    v = t.evaluation.val_metric
    return math.nan if v is None else v


def _f(v: Any, digits: int) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}"
