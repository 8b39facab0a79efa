"""A suite's aggregate: ``results.json``, ``results.csv``, ``candidates.csv`` and ``results.md``.

Built only from the runs' ``report.json`` files (plus this invocation's failures), in matrix
order, so a suite that was interrupted and resumed aggregates exactly like one that ran straight
through. ``results.csv`` has one row per run: the shipped model's figures next to the two
baselines a user would otherwise deploy (the torch fp32 teacher and the teacher quantized to
INT8 by OpenVINO post-training quantization) and the speed-ups over them. ``candidates.csv`` has
one row per run × candidate. Every file is written atomically.
"""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from .._io import sha256_file, write_json_atomic, write_text_atomic
from ..measure.machine import machine_summary
from .spec import Run, Suite

TORCH_FP32, OV_INT8, ONNX_FP32 = "teacher-torch-fp32", "teacher-openvino-int8", "teacher-onnxruntime-fp32"

RUN_COLUMNS = (
    "run", "teacher", "dataset", "target", "setting", "status", "shipped", "shipped_backend", "shipped_precision",
    "student", "teacher_auc", "shipped_auc", "auc_drop", "max_auc_drop", "shipped_sensitivity",
    "shipped_specificity", "shipped_p50_ms", "shipped_p90_ms", "shipped_p99_ms", "shipped_throughput_ips",
    "shipped_ci95_rel", "shipped_iterations", "batch", "shipped_throughput_ips_at_batch", "shipped_session_mb",
    "shipped_peak_mb", "shipped_size_bytes", "shipped_params", "shipped_macs", "teacher_torch_fp32_p50_ms",
    "teacher_openvino_int8_p50_ms", "teacher_openvino_int8_auc", "teacher_openvino_int8_session_mb",
    "teacher_onnx_fp32_size_bytes", "speedup_vs_torch_fp32", "speedup_vs_openvino_int8", "size_vs_onnx_fp32",
    "int8_vs_fp32_on_target", "precision_note", "compress_seconds", "machine", "loadavg_1m", "created", "report",
    "error",
)
CANDIDATE_COLUMNS = (
    "run", "candidate", "role", "stage", "backend", "precision", "shipped", "auc", "sensitivity", "specificity",
    "accuracy", "p50_ms", "p90_ms", "p99_ms", "throughput_ips", "ci95_rel", "iterations", "stop", "batch",
    "throughput_ips_at_batch", "session_mb", "peak_mb", "size_bytes", "params", "macs", "precision_hint",
)


def write_results(suite: Suite, out: Path, failed: dict[str, str] | None = None) -> dict:
    """Aggregate every run of ``suite`` found under ``out/runs`` and write the four files; returns results.json."""
    from .run import select_runs

    runs = select_runs(suite)
    rows = [run_row(r, out, (failed or {}).get(r.id)) for r in runs]
    agg = {
        "suite": suite.name,
        "description": suite.description,
        "suite_file": str(suite.source) if suite.source else None,
        "suite_sha256": sha256_file(suite.source) if suite.source else None,
        "edgekd_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "summary": {s: sum(r["status"] == s for r in rows) for s in ("shipped", "not_shipped", "failed", "pending")},
        "machines": sorted({r["machine"] for r in rows if r["machine"]}),
        "columns": list(RUN_COLUMNS),
        "runs": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", agg)
    write_text_atomic(out / "results.csv", _csv(RUN_COLUMNS, rows))
    write_text_atomic(out / "candidates.csv", _csv(CANDIDATE_COLUMNS, [c for r in rows for c in r["candidates"]]))
    write_text_atomic(out / "results.md", markdown(agg))
    return agg


def run_row(run: Run, out: Path, error: str | None = None) -> dict:
    """One run's figures (status ``pending`` or ``failed`` when it has no report)."""
    row: dict = {k: None for k in RUN_COLUMNS}
    row.update(run=run.id, teacher=run.teacher.name, dataset=run.dataset.name, target=run.target, setting=run.setting)
    path = out / "runs" / run.id / "report.json"
    if not path.is_file():
        row.update(status="failed" if error else "pending", error=error, candidates=[])
        return row
    rep = json.loads(path.read_text())
    by = {c["name"]: c for c in rep["candidates"]}
    shipped = by.get(rep.get("shipped") or "")
    teacher_auc = rep.get("shipping", {}).get("teacher_auc")
    row.update(
        status="shipped" if shipped else "not_shipped", shipped=rep.get("shipped"), teacher_auc=teacher_auc,
        student=rep.get("stages", {}).get("distill", {}).get("student"),
        max_auc_drop=rep.get("shipping", {}).get("max_auc_drop"), compress_seconds=rep.get("seconds"),
        machine=machine_summary(rep["machine"]) if rep.get("machine") else None,
        loadavg_1m=(rep.get("machine", {}).get("loadavg") or [None])[0], created=rep.get("created"),
        report=str(path.relative_to(out)), **_baselines(by), **_speedups(rep.get("speedups", {})),
        **_precision(rep.get("precision_notes", [])),
    )
    if shipped:
        row.update(_shipped(shipped))
        if teacher_auc is not None and row["shipped_auc"] is not None:
            row["auc_drop"] = teacher_auc - row["shipped_auc"]
    row["candidates"] = [candidate_row(run.id, c, rep.get("shipped")) for c in rep["candidates"]]
    return row


def candidate_row(run_id: str, c: dict, shipped: str | None) -> dict:
    m, lat, mem = c.get("metrics") or {}, c.get("latency_ms") or {}, c.get("memory_mb") or {}
    at = lat.get("at_batch") or {}
    return {
        "run": run_id, "candidate": c["name"], "role": c.get("role"), "stage": c.get("stage"),
        "backend": c.get("backend"), "precision": c.get("precision"), "shipped": c["name"] == shipped,
        "auc": m.get("auc"), "sensitivity": m.get("sensitivity"), "specificity": m.get("specificity"),
        "accuracy": m.get("accuracy"), "p50_ms": lat.get("p50"), "p90_ms": lat.get("p90"), "p99_ms": lat.get("p99"),
        "throughput_ips": lat.get("throughput_ips"), "ci95_rel": lat.get("ci95_rel"),
        "iterations": lat.get("iterations"), "stop": lat.get("stop"), "batch": at.get("batch"),
        "throughput_ips_at_batch": at.get("throughput_ips"), "session_mb": mem.get("session_mb"),
        "peak_mb": mem.get("peak_mb"), "size_bytes": c.get("size_bytes"), "params": c.get("params"),
        "macs": c.get("macs"), "precision_hint": (c.get("runtime_config") or {}).get("INFERENCE_PRECISION_HINT"),
    }


def _shipped(c: dict) -> dict:
    row = candidate_row("", c, c["name"])
    return {"shipped_backend": c.get("backend"), "shipped_precision": c.get("precision"),
            "shipped_auc": row["auc"], "shipped_sensitivity": row["sensitivity"],
            "shipped_specificity": row["specificity"], "shipped_p50_ms": row["p50_ms"],
            "shipped_p90_ms": row["p90_ms"], "shipped_p99_ms": row["p99_ms"],
            "shipped_throughput_ips": row["throughput_ips"], "shipped_ci95_rel": row["ci95_rel"],
            "shipped_iterations": row["iterations"], "batch": row["batch"],
            "shipped_throughput_ips_at_batch": row["throughput_ips_at_batch"],
            "shipped_session_mb": row["session_mb"], "shipped_peak_mb": row["peak_mb"],
            "shipped_size_bytes": row["size_bytes"], "shipped_params": row["params"], "shipped_macs": row["macs"]}


def _baselines(by: dict) -> dict:
    torch_fp32, ov_int8, onnx_fp32 = by.get(TORCH_FP32, {}), by.get(OV_INT8, {}), by.get(ONNX_FP32, {})
    return {"teacher_torch_fp32_p50_ms": (torch_fp32.get("latency_ms") or {}).get("p50"),
            "teacher_openvino_int8_p50_ms": (ov_int8.get("latency_ms") or {}).get("p50"),
            "teacher_openvino_int8_auc": (ov_int8.get("metrics") or {}).get("auc"),
            "teacher_openvino_int8_session_mb": (ov_int8.get("memory_mb") or {}).get("session_mb"),
            "teacher_onnx_fp32_size_bytes": onnx_fp32.get("size_bytes")}


def _speedups(sp: dict) -> dict:
    return {"speedup_vs_torch_fp32": sp.get(f"latency_vs_{TORCH_FP32}"),
            "speedup_vs_openvino_int8": sp.get(f"latency_vs_{OV_INT8}"),
            "size_vs_onnx_fp32": sp.get(f"size_vs_{ONNX_FP32}")}


def _precision(notes: list[dict]) -> dict:
    n = next((n for n in notes if n.get("target_runtime") and n.get("precision") == "int8"), None)
    return {"int8_vs_fp32_on_target": n["ratio"] if n else None, "precision_note": n["note"] if n else None}


def _csv(columns: tuple[str, ...], rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in columns})
    return buf.getvalue()


def _f(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def markdown(agg: dict) -> str:
    """The results table for benchmarks/README.md: machine, date, medians, baselines, speed-ups."""
    lines = [f"### Suite `{agg['suite']}` — {agg['created'][:10]}", "",
             "Machine: " + ("; ".join(agg["machines"]) or "—") + f". edgekd {agg['edgekd_version']}. "
             "Latency: batch-1 medians (p50) on the test split; method in benchmarks/README.md.", "",
             "| run | shipped | AUC teacher → shipped | p50 ms | p99 ms | images/s | session MB | torch fp32 teacher p50 "
             "| OV INT8 teacher p50 | vs torch fp32 | vs OV INT8 | size vs ONNX fp32 | INT8/fp32 p50 | compress s |",
             "|" + "---|" * 14]
    for r in agg["runs"]:
        shipped = r["shipped"] or r["status"].replace("_", " ")
        if r["shipped"]:
            shipped = f"{r['shipped']} ({r['student']})"
        lines.append(
            f"| {r['run']} | {shipped} | {_f(r['teacher_auc'], '.4f')} → {_f(r['shipped_auc'], '.4f')} | "
            f"{_f(r['shipped_p50_ms'], '.3f')} | {_f(r['shipped_p99_ms'], '.3f')} | {_f(r['shipped_throughput_ips'], '.0f')} | "
            f"{_f(r['shipped_session_mb'], '.1f')} | {_f(r['teacher_torch_fp32_p50_ms'], '.3f')} | "
            f"{_f(r['teacher_openvino_int8_p50_ms'], '.3f')} | {_f(r['speedup_vs_torch_fp32'], '.1f')}× | "
            f"{_f(r['speedup_vs_openvino_int8'], '.1f')}× | {_f(r['size_vs_onnx_fp32'], '.1f')}× | "
            f"{_f(r['int8_vs_fp32_on_target'], '.2f')} | {_f(r['compress_seconds'], '.0f')} |")
    notes = [f"- {r['run']}: {r['precision_note']}" for r in agg["runs"] if r.get("precision_note")]
    if notes:
        lines += ["", "Precision chosen by measurement:", "", *notes]
    return "\n".join(lines) + "\n"
