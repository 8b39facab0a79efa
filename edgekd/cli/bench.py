"""``edgekd bench SUITE``: one call to :func:`edgekd.suites.run.run_suite`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import EdgekdError
from . import app, fail, log_console, print_whole


@app.command()
def bench(
    suite: str = typer.Argument(..., help="Suite name in benchmarks/suites/ (e.g. pneumonia-cpu) or a path to a .yaml file."),
    out: Optional[Path] = typer.Option(None, help="Suite output folder (default build/bench/<suite name>)."),
    force: bool = typer.Option(False, help="Re-run finished runs too."),
    only: Optional[List[str]] = typer.Option(None, help="Run only the run ids matching this glob (repeatable)."),
    list_runs: bool = typer.Option(False, "--list", help="Print the run matrix and each run's state, run nothing."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the run lines, the final table and errors."),
) -> None:
    """Run a benchmark suite (teachers × datasets × targets × settings); resumes where it stopped."""
    from .._compat import quiet_third_party
    from ..suites.spec import load_suite

    quiet_third_party()
    console = log_console()
    try:
        s = load_suite(suite)
        folder = out or Path("build") / "bench" / s.name
        if list_runs:
            _print_matrix(s, folder, only)
            return
        from ..suites.run import run_suite

        def log(msg: str) -> None:
            if not quiet or not msg.startswith("    "):
                console.print(msg, highlight=False, markup=False)

        result = run_suite(s, folder, force=force, only=only, log=log)
    except EdgekdError as exc:
        raise fail(exc)
    _print_results(result.results)
    counts = result.results["summary"]
    console.print(f"suite {s.name}: {counts['shipped']} shipped, {counts['not_shipped']} not shipped, "
                  f"{counts['failed']} failed, {counts['pending']} pending; ran {len(result.ran)}, skipped "
                  f"{len(result.skipped)} finished; results in {folder / 'results.json'} and results.csv", highlight=False)
    if result.failed:
        raise typer.Exit(code=1)


def _print_matrix(suite, folder: Path, only: Optional[List[str]]) -> None:
    from ..suites.run import TeacherCache, run_state, select_runs
    from ..suites.spec import run_config

    cache = TeacherCache(folder / "teachers", log=lambda m: None)
    for run in select_runs(suite, only):
        state = run_state(folder / "runs" / run.id, run_config(run, folder / "runs" / run.id, cache.weights_path(run)))
        typer.echo(f"{run.id}\t{state}")


def _print_results(results: dict) -> None:
    from rich.table import Table

    t = Table(title=f"edgekd bench · {results['suite']} · {'; '.join(results['machines']) or ''}")
    for col in ("run", "status", "shipped", "AUC teacher → shipped", "p50 ms", "vs torch fp32", "vs OV INT8",
                "session MB", "INT8/fp32"):
        t.add_column(col, justify="left" if col in ("run", "status", "shipped") else "right")

    def f(v, spec):
        return "—" if v is None else format(v, spec)

    for r in results["runs"]:
        t.add_row(r["run"], r["status"], r["shipped"] or "—",
                  f"{f(r['teacher_auc'], '.4f')} → {f(r['shipped_auc'], '.4f')}", f(r["shipped_p50_ms"], ".3f"),
                  f(r["speedup_vs_torch_fp32"], ".1f"), f(r["speedup_vs_openvino_int8"], ".1f"),
                  f(r["shipped_session_mb"], ".1f"), f(r["int8_vs_fp32_on_target"], ".2f"))
    print_whole(t)
