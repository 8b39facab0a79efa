"""Rich progress bars for long work (training, calibration, benchmarking).

Bars go to stderr and vanish when done, and only when stderr is an interactive terminal: a pipe,
a file, a CI log or ``TERM=dumb`` gets no bars (no blank lines, no control sequences).
``EDGEKD_NO_PROGRESS=1`` turns them off in a terminal too.
"""
from __future__ import annotations

import os
import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def enabled() -> bool:
    """Bars on: stderr is an interactive terminal and ``EDGEKD_NO_PROGRESS`` is unset (or 0)."""
    from ._term import interactive

    return os.environ.get("EDGEKD_NO_PROGRESS", "") in ("", "0") and interactive(sys.stderr)


def track(iterable: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a transient rich progress bar (or silently when disabled)."""
    if not enabled():
        yield from iterable
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    columns = [TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)
        for item in iterable:
            yield item
            progress.advance(task)
