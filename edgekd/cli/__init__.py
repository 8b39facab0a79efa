"""The ``edgekd`` command line: small commands over library functions; heavy imports inside them."""
from __future__ import annotations

import sys

import typer

from ..errors import EdgekdError

app = typer.Typer(
    name="edgekd",
    help="Compress a trained medical-imaging classifier into a small, fast, verified edge model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(exc: EdgekdError) -> typer.Exit:
    """Print the one-line error and return the Exit to raise."""
    typer.secho(f"error: {exc}", fg="red", err=True)
    return typer.Exit(code=exc.exit_code)


from . import compress as _compress  # noqa: E402,F401  (registers the command)
from . import report as _report  # noqa: E402,F401
from . import targets as _targets  # noqa: E402,F401
from . import bench as _bench  # noqa: E402,F401
from . import verify as _verify  # noqa: E402,F401


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
