"""``edgekd verify BUNDLE``: one call to :func:`edgekd.bundle.verify.verify_bundle`; exit 0 / 1 / 2."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from . import app, fail
from ..errors import EdgekdError

EXIT_NOT_VERIFIED = 1


@app.command()
def verify(
    bundle: Path = typer.Argument(..., help="Bundle folder (build/bundle) or archive (build/bundle.tar.gz)."),
    manifest_sha256: Optional[str] = typer.Option(None, help="Also require this manifest digest (recorded at release)."),
    skip_outputs: bool = typer.Option(False, "--skip-outputs", help="Check hashes only; do not re-run the model."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON instead of lines."),
) -> None:
    """Check every file's sha256, the manifest's integrity, and re-run the model on the bundled sample.

    Exit 0: the bundle verifies; 1: it does not (each problem named); 2: not a bundle / bad input.
    """
    from ..bundle.verify import verify_bundle

    try:
        result = verify_bundle(bundle, manifest_sha256=manifest_sha256, run_outputs=not skip_outputs)
    except EdgekdError as exc:
        raise fail(exc)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        for line in report_lines(result):
            typer.echo(line)
    if not result.ok:
        raise typer.Exit(code=EXIT_NOT_VERIFIED)


def report_lines(result) -> list[str]:
    """What ``edgekd verify`` prints: identity, each check, each problem by file, the verdict."""
    s = result.summary
    lines = [f"bundle   {result.bundle}"]
    if s:
        lines.append(f"         {s.get('shipped')} ({s.get('backend')}, {s.get('precision')}) for {s.get('target')}; "
                     f"edgekd {s.get('edgekd_version')}, created {s.get('created')}")
    kinds = {p.kind for p in result.problems}
    lines.append(f"manifest {'FAILED' if 'manifest' in kinds else 'ok'}  sha256 {result.manifest_sha256}")
    bad_files = [p for p in result.problems if p.kind in ("changed", "missing")]
    lines.append(f"files    {result.files - len(bad_files)} of {result.files} match their sha256 and size"
                 + (f"; {sum(p.kind == 'extra' for p in result.problems)} extra" if "extra" in kinds else ""))
    o = result.outputs
    if o is None:
        lines.append("outputs  not re-run (--skip-outputs)")
    elif o.skipped:
        lines.append(f"outputs  skipped: {o.skipped}")
    elif o.max_abs_diff is None:
        lines.append("outputs  FAILED  (below)")
    else:
        lines.append(f"outputs  {'ok' if o.ok else 'FAILED'}  {o.runtime} on {o.model}, {o.n} sample images: "
                     f"max |Δlogit| {o.max_abs_diff:.3g} (allowed {o.allowed:.3g}), "
                     f"predictions agree {o.agreement:.1%}")
        if o.note:
            lines.append(f"         note: {o.note}")
    lines += [p.line() for p in result.problems]
    n = len(result.problems)
    lines.append("VERIFIED" if result.ok else f"NOT VERIFIED: {n} problem{'s' if n != 1 else ''}")
    return lines
