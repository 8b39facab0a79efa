"""Is a stream a person's terminal? Decides progress bars (stderr) and tables (stdout).

A pipe, a file, a CI log or ``TERM=dumb`` is not: those get plain lines, nothing that moves the
cursor or cuts text to fit a width.
"""
from __future__ import annotations

import os
from typing import IO, Any


def interactive(stream: IO[Any] | None) -> bool:
    """True when ``stream`` is a terminal that understands cursor movement."""
    isatty = getattr(stream, "isatty", None)
    try:
        tty = bool(isatty and isatty())
    except ValueError:  # closed (e.g. at interpreter shutdown)
        return False
    return tty and os.environ.get("TERM", "").lower() not in ("dumb", "unknown")
