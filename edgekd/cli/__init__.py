"""The ``edgekd`` command line: small commands over library functions; heavy imports inside them."""
from __future__ import annotations

import os
import sys
from pathlib import Path

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


def print_whole(table) -> None:
    """Print a rich table on stdout at its full width: no cell is cut ('…') or wrapped.

    Each row is one line in a pipe or a log, whatever ``COLUMNS`` says; a narrower terminal wraps
    the long lines rather than the table dropping text.
    """
    from rich.console import Console
    from rich.measure import Measurement

    console = Console()
    console.width = max(console.width, Measurement.get(console, console.options.update_width(10_000), table).maximum)
    console.print(table)


def log_console():
    """The stderr console of a command's log: a line is never broken to fit a width (a pipe reads 80).

    edgekd's own warnings print on it as one ``warning: …`` line (not Python's file:line and source
    line); other libraries' warnings keep Python's format.
    """
    import warnings

    from rich.console import Console
    from rich.text import Text

    console = Console(stderr=True, soft_wrap=True)
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if str(Path(filename).resolve()).startswith(_PACKAGE):
            console.print(Text.assemble(("warning: ", "yellow"), str(message)), highlight=False)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    return console


_PACKAGE = str(Path(__file__).resolve().parent.parent) + os.sep


from . import bench as _bench  # noqa: E402,F401
from . import compress as _compress  # noqa: E402,F401  (registers the command)
from . import data as _data  # noqa: E402,F401
from . import report as _report  # noqa: E402,F401
from . import targets as _targets  # noqa: E402,F401
from . import train_teacher as _train_teacher  # noqa: E402,F401
from . import verify as _verify  # noqa: E402,F401


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
