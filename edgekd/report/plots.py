"""The report's figures, drawn with matplotlib (Agg, no display) from report.json alone.

Each ``fig_*`` function takes the report dict and returns a matplotlib Figure (tests inspect the
plotted data); :func:`png_base64` turns one into the PNG embedded in report.html.
"""
from __future__ import annotations

import base64
import io
from typing import Any

MIB = 1024 * 1024
SHIPPED_COLOR, TEACHER_COLOR, STUDENT_COLOR, FRONT_COLOR = "#d62728", "#7f7f7f", "#1f77b4", "#2ca02c"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def png_base64(fig: Any, dpi: int = 110) -> str:
    """The figure as a base64 PNG (then closed, so figures do not accumulate)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def timed_points(report: dict) -> list[tuple[str, float, float, dict]]:
    """(name, p50 ms, AUC, candidate) of every candidate with both figures."""
    return [(c["name"], c["latency_ms"]["p50"], c["metrics"]["auc"], c) for c in report["candidates"]
            if c.get("latency_ms") and c.get("metrics")]


def fig_accuracy_latency(report: dict):
    """Test AUC (with its bootstrap CI) vs batch-1 p50 latency; Pareto front joined, shipped starred."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    front = set(report.get("clinical", {}).get("pareto_front", []))
    for name, lat, auc, c in timed_points(report):
        ci = (c["metrics"].get("auc_ci") or [auc, auc])
        color = TEACHER_COLOR if c["role"] == "baseline" else STUDENT_COLOR
        ax.errorbar([lat], [auc], yerr=[[auc - ci[0]], [ci[1] - auc]], fmt="o", color=color, ms=6, capsize=3,
                    alpha=0.85, gid=f"point:{name}")
        ax.annotate(name, (lat, auc), xytext=(4, 4), textcoords="offset points", fontsize=7)
    pts = sorted((lat, auc) for name, lat, auc, _ in timed_points(report) if name in front)
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "--", color=FRONT_COLOR, lw=1.5, label="Pareto front",
                gid="pareto")
    shipped = next((p for p in timed_points(report) if p[0] == report.get("shipped")), None)
    if shipped is not None:
        ax.plot([shipped[1]], [shipped[2]], marker="*", ms=18, color=SHIPPED_COLOR, ls="none",
                label=f"shipped: {shipped[0]}", gid="shipped")
    ax.plot([], [], "o", color=TEACHER_COLOR, label="teacher baselines")
    ax.plot([], [], "o", color=STUDENT_COLOR, label="students")
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency, batch 1 (ms, log scale)")
    ax.set_ylabel("test AUC (95 % CI)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def fig_sizes(report: dict):
    """On-disk (or state_dict) size of every candidate that has one; shipped in red."""
    plt = _plt()
    rows = [(c["name"], c["size_bytes"] / MIB) for c in report["candidates"] if c.get("size_bytes")]
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(rows) + 1.0))
    colors = [SHIPPED_COLOR if n == report.get("shipped") else STUDENT_COLOR for n, _ in rows]
    bars = ax.barh([n for n, _ in rows], [v for _, v in rows], color=colors)
    for bar, (_, v) in zip(bars, rows):
        ax.annotate(f"{v:.2f} MiB", (bar.get_width(), bar.get_y() + bar.get_height() / 2), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("size (MiB)")
    ax.tick_params(axis="y", labelsize=8)
    ax.margins(x=0.15)
    return fig


def fig_roc(report: dict):
    """ROC curves of teacher, student and shipped model on test; each model's operating point marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    by = {c["name"]: c for c in report["candidates"]}
    styles = {"teacher": (TEACHER_COLOR, "-"), "student": (STUDENT_COLOR, "--"), "shipped": (SHIPPED_COLOR, "-")}
    for role, curve in report.get("clinical", {}).get("roc", {}).items():
        color, ls = styles.get(role, ("k", ":"))
        ax.plot(curve["fpr"], curve["tpr"], ls, color=color, lw=1.8, gid=f"roc:{role}",
                label=f"{role}: {curve['candidate']} (AUC {curve['auc']:.4f})")
        m = (by.get(curve["candidate"]) or {}).get("metrics") or {}
        if m.get("threshold") is not None:
            ax.plot([1 - m["specificity"]], [m["sensitivity"]], "o", color=color, ms=7, gid=f"op:{role}")
    ax.plot([0, 1], [0, 1], ":", color="#bbbbbb", lw=1)
    ax.set_xlabel("1 − specificity (false-positive rate)")
    ax.set_ylabel("sensitivity (true-positive rate)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return fig


WATERFALL_FIELDS = (  # (title, getter from a candidate dict, lower is better)
    ("size (MiB)", lambda c: c["size_bytes"] / MIB if c.get("size_bytes") else None, True),
    ("MACs (M)", lambda c: c["macs"] / 1e6 if c.get("macs") else None, True),
    ("p50 latency (ms)", lambda c: (c.get("latency_ms") or {}).get("p50"), True),
    ("test AUC", lambda c: (c.get("metrics") or {}).get("auc"), False),
)


def waterfall_values(report: dict) -> list[tuple[str, list[float | None]]]:
    """Per waterfall field, the value at each step (None where a step has none, e.g. simulated INT8)."""
    by = {c["name"]: c for c in report["candidates"]}
    steps = [by[n] for n in report.get("clinical", {}).get("waterfall", []) if n in by]
    return [(title, [get(c) for c in steps]) for title, get, _ in WATERFALL_FIELDS]


def fig_waterfall(report: dict):
    """Stage by stage from the teacher to the shipped model: the first and last bars are totals, the
    bars between float from the previous value to the next (green: better, red: worse)."""
    plt = _plt()
    names = report.get("clinical", {}).get("waterfall", [])
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    for ax, (title, values), (_, _, lower_better) in zip(axes, waterfall_values(report), WATERFALL_FIELDS):
        prev = None
        for i, v in enumerate(values):
            if v is None:
                ax.annotate("n/a", (i, 0), ha="center", va="bottom", fontsize=7, color="#888888")
                continue
            total = prev is None or i == len(values) - 1
            if total:
                ax.bar(i, v, color=SHIPPED_COLOR if i == len(values) - 1 and i > 0 else TEACHER_COLOR, gid=f"bar:{i}")
            else:
                better = (v < prev) if lower_better else (v > prev)
                ax.bar(i, v - prev, bottom=prev, color="#2ca02c" if better else "#ff7f0e", gid=f"bar:{i}")
            ax.annotate(f"{v:.4g}", (i, v), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=7)
            prev = v
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([n.replace("student-", "").replace("teacher-", "teacher\n") for n in names],
                           rotation=40, ha="right", fontsize=7)
        if not lower_better:
            finite = [v for v in values if v is not None]
            if finite:
                ax.set_ylim(max(0.0, min(finite) - 0.05), min(1.0, max(finite) + 0.02))
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def robustness_curves(report: dict, split: str = "test") -> dict[str, dict[str, list[float]]]:
    """Per shift kind, per model (teacher and shown student): the metric at severity 0 (clean), 1, 2, 3."""
    sec = report.get("robustness") or {}
    out: dict[str, dict[str, list[float]]] = {}
    for name in (sec.get("teacher"), sec.get("shown")):
        r = (sec.get("candidates", {}).get(name) or {}).get(split) if name else None
        if not r:
            continue
        for score in r["scores"]:
            curve = out.setdefault(score["shift"], {}).setdefault(name, [r["clean"]])
            curve.append(score["metric"])
    return out


def fig_robustness(report: dict):
    """Test metric against severity (0: clean) for each shift kind: teacher grey, the shipped (or shown) model red."""
    plt = _plt()
    sec = report.get("robustness") or {}
    curves = robustness_curves(report)
    kinds = list(curves)
    cols = 4
    rows = max(1, -(-len(kinds) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(12, 2.6 * rows), squeeze=False, sharey=True)
    for ax in axes.flat[len(kinds):]:
        ax.set_visible(False)
    for ax, kind in zip(axes.flat, kinds):
        for name, values in curves[kind].items():
            teacher = name == sec.get("teacher")
            ax.plot(range(len(values)), values, "o-" if teacher else "s--", color=TEACHER_COLOR if teacher else SHIPPED_COLOR,
                    lw=1.6, ms=4, label=name, gid=f"robust:{kind}:{name}")
        ax.set_title(kind, fontsize=9)
        ax.set_xticks(range(4))
        ax.set_xlabel("severity (0: clean)", fontsize=8)
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel(f"test {str(sec.get('metric', 'metric')).upper()}")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
