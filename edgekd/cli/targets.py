"""``edgekd targets list`` / ``edgekd targets show NAME``."""
from __future__ import annotations

import typer

from . import app, fail
from ..errors import EdgekdError

targets_app = typer.Typer(help="Hardware target profiles (targets/*.yaml).", no_args_is_help=True)
app.add_typer(targets_app, name="targets")


@targets_app.command("list")
def list_cmd() -> None:
    """List the known targets with runtime and precisions."""
    from rich.console import Console
    from rich.table import Table

    from ..targets import list_targets, load_target

    t = Table("target", "runtime", "precisions", "default student", "description")
    for name in list_targets():
        p = load_target(name)
        t.add_row(p.name, p.runtime, ", ".join(p.precisions), p.default_student, p.description)
    Console().print(t)


@targets_app.command("show")
def show_cmd(name: str = typer.Argument(..., help="Target name, e.g. intel-cpu.")) -> None:
    """Print one resolved profile as YAML."""
    import yaml

    from ..targets import load_target

    try:
        p = load_target(name)
    except EdgekdError as exc:
        raise fail(exc)
    typer.echo(yaml.safe_dump(p.to_dict(), sort_keys=False).rstrip())
