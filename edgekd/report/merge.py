"""Fold measurements made on the device (the bundle's runner.py output) into a host report."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from .._io import write_json_atomic, write_text_atomic
from ..device import load_device_result
from ..errors import InputError
from .writer import markdown


def merge_device(report_path: Path, device_paths: list[Path], candidate: str | None = None) -> dict:
    """Add each device JSON to ``report["device_measurements"]`` and rewrite report.json and report.md."""
    report_path = Path(report_path)
    if not report_path.is_file():
        raise InputError(f"report {report_path} does not exist: pass --report path/to/report.json")
    try:
        report = json.loads(report_path.read_text())
    except json.JSONDecodeError:
        raise InputError(f"{report_path} is not valid JSON: pass the report.json that edgekd compress wrote") from None
    if "candidates" not in report:
        raise InputError(f"{report_path} is not an edgekd report (no candidates)")
    names = [c["name"] for c in report["candidates"]]
    target = candidate or report.get("shipped")
    if target is None:
        raise InputError("the report shipped nothing: name the measured model with --candidate NAME")
    if target not in names:
        from ..errors import did_you_mean

        raise InputError(f"no candidate '{target}' in the report{did_you_mean(target, names)}")
    merged = report.setdefault("device_measurements", [])
    for p in device_paths:
        doc = load_device_result(p)
        merged.append({
            "candidate": target,
            "measured_on": "device",
            "source_file": str(p),
            "merged": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": doc.get("device"),
            "runtime": doc.get("runtime"),
            "batch": doc.get("batch"),
            "latency_ms": doc["latency_ms"],
            "throughput_ips": doc.get("throughput_ips"),
            "metrics": doc.get("metrics"),
            "sample": doc.get("sample"),
            "model": doc.get("model"),
        })
    write_json_atomic(report_path, report)
    write_text_atomic(report_path.with_name("report.md"), markdown(report))
    return report
