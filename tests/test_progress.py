"""Progress bars: only for a person at a terminal; a pipe, a log or TERM=dumb gets none."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from edgekd._progress import track

WORK = "from edgekd._progress import track; assert sum(track(range(300), 'work')) == 44850"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _bars(monkeypatch, **env) -> str:
    """What ``track`` writes to a stderr that claims to be a terminal, under ``env``."""
    monkeypatch.delenv("EDGEKD_NO_PROGRESS", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    err = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", err)
    assert list(track(range(50), "work")) == list(range(50))
    return err.getvalue()


def test_in_a_pipe_stderr_gets_nothing_at_all():
    env = {k: v for k, v in os.environ.items() if k != "EDGEKD_NO_PROGRESS"}
    res = subprocess.run([sys.executable, "-c", WORK], env=env, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stderr == b""  # no blank line, no escape sequence


def test_a_terminal_gets_a_bar(monkeypatch):
    assert "\x1b[" in _bars(monkeypatch, TERM="xterm-256color")


@pytest.mark.parametrize("env", [{"TERM": "dumb"}, {"TERM": "xterm", "EDGEKD_NO_PROGRESS": "1"}])
def test_a_dumb_terminal_or_edgekd_no_progress_gets_no_bar(monkeypatch, env):
    assert _bars(monkeypatch, **env) == ""
