"""``edgekd report --merge device.json``: fold device measurements into a report."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import EdgekdError
from . import app, fail


@app.command()
def report(
    merge: List[Path] = typer.Option(..., "--merge", help="device.json written by the bundle's runner.py (repeatable)."),
    report_path: Path = typer.Option(Path("build/report.json"), "--report", help="The report.json to update."),
    candidate: Optional[str] = typer.Option(None, help="Candidate the device ran (default: the shipped one)."),
) -> None:
    """Add on-device latency and accuracy to report.json / report.md, next to the host figures."""
    from ..report.merge import merge_device

    try:
        rep = merge_device(report_path, merge, candidate)
    except EdgekdError as exc:
        raise fail(exc)
    for m in rep["device_measurements"][-len(merge):]:
        dev = m.get("device") or {}
        typer.echo(f"merged: {m['candidate']} on {dev.get('model') or dev.get('hostname') or 'device'} — "
                   f"p50 {m['latency_ms']['p50']:.3f} ms ({(m.get('runtime') or {}).get('name', '?')})")
    typer.echo(f"updated {report_path} and {report_path.with_name('report.md')}")
