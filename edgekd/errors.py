"""Every error edgekd raises on purpose.

Each message says what is wrong, why, and how to fix it, in one line: the CLI prints
``error: <message>`` and exits with code 2 (:data:`EXIT_BAD_INPUT`), or 3 when the pipeline
ran but no candidate met the accuracy budget (:data:`EXIT_NOT_SHIPPED`).
"""
from __future__ import annotations

import difflib
from typing import Iterable

EXIT_BAD_INPUT = 2
EXIT_NOT_SHIPPED = 3


class EdgekdError(Exception):
    """Base class: a controlled failure with a one-line, actionable message."""

    exit_code = EXIT_BAD_INPUT


class InputError(EdgekdError):
    """A file, option or value given by the user is missing, unreadable or malformed."""


class DataError(InputError):
    """The dataset is malformed (missing key, empty class folder, bad shape, ...)."""


class TeacherError(InputError):
    """The teacher cannot be loaded, is untrusted, or does not fit the data."""


class TargetError(InputError):
    """Unknown target name or invalid target profile."""


class MissingDependencyError(EdgekdError):
    """An optional backend (TensorRT, ...) is not installed."""


class SetupError(EdgekdError):
    """This machine's tools stop a library from working (a C++ build that failed or timed out)."""


class LoweringError(EdgekdError):
    """Exporting a model to a runtime failed, or the exported model disagrees with its source."""


class NotShippedError(EdgekdError):
    """The pipeline ran, but no candidate stayed within the accuracy budget."""

    exit_code = EXIT_NOT_SHIPPED


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a close match exists, else an empty string."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""
