"""``edgekd targets list`` / ``edgekd targets show NAME``."""
from __future__ import annotations

import json

import typer

from ..errors import EdgekdError
from . import app, fail

targets_app = typer.Typer(help="Hardware target profiles (targets/*.yaml).", no_args_is_help=True)
app.add_typer(targets_app, name="targets")

LISTED = ("name", "runtime", "precisions", "default_student", "description")  # the fields `targets list` prints
HEADS = ("target", "runtime", "precisions", "default student")  # the table's columns before the description
DESCRIPTION_MIN = 20  # the table's narrowest description column; a narrower terminal gets plain lines


@targets_app.command("list")
def list_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of objects: " + ", ".join(LISTED) + "."),
) -> None:
    """List the known targets with runtime, precisions, default student and description.

    On a terminal: a table. In a pipe, a file or a terminal too narrow for the table: one target
    per line, tab-separated fields in that order. Names are never shortened.
    """
    from ..targets import list_targets, load_target

    try:
        rows = [{k: load_target(name).to_dict()[k] for k in LISTED} for name in list_targets()]
    except EdgekdError as exc:
        raise fail(exc)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif not _print_table(rows):
        for r in rows:
            typer.echo("\t".join([r["name"], r["runtime"], ",".join(r["precisions"]), r["default_student"],
                                  " ".join(r["description"].split())]))


def _print_table(rows: list[dict]) -> bool:
    """A table on an interactive stdout wide enough to show every name whole; False otherwise."""
    import sys

    from rich.console import Console
    from rich.table import Table

    from .._term import interactive

    if not interactive(sys.stdout):
        return False
    cells = [[r["name"], r["runtime"], ", ".join(r["precisions"]), r["default_student"]] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(HEADS)]
    console = Console()
    if console.width < sum(widths) + DESCRIPTION_MIN + 3 * (len(HEADS) + 1) + 1:  # each column: 2 padding + 1 border
        return False
    t = Table()
    for head, width in zip(HEADS, widths):
        t.add_column(head, no_wrap=True, min_width=width)
    t.add_column("description", overflow="fold")
    for c, r in zip(cells, rows):
        t.add_row(*c, r["description"])
    console.print(t)
    return True


@targets_app.command("show")
def show_cmd(
    name: str = typer.Argument(..., help="Target name, e.g. intel-cpu."),
    as_json: bool = typer.Option(False, "--json", help="Print the profile as JSON instead of YAML."),
) -> None:
    """Print one resolved profile (every field, defaults filled in) as YAML, or JSON with --json."""
    from ..targets import load_target

    try:
        p = load_target(name)
    except EdgekdError as exc:
        raise fail(exc)
    if as_json:
        typer.echo(json.dumps(p.to_dict(), indent=2, default=str))
    else:
        import yaml

        typer.echo(yaml.safe_dump(p.to_dict(), sort_keys=False).rstrip())
