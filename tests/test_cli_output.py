"""What ``edgekd compress`` prints in a pipe: the final table whole (every row one line, no '…')
at any ``COLUMNS``, and log lines never broken to fit a width."""
from __future__ import annotations

import json

import pytest

from edgekd.cli import log_console
from edgekd.cli.compress import _print_table

NAMES = ["teacher-onnxruntime-fp32", "student-from-teacher-int8-onnxruntime-qdq-per-channel", "student-fp32-openvino"]


def _report() -> dict:
    cands = [{"name": n, "role": "baseline" if n.startswith("teacher") else "student", "backend": "onnxruntime",
              "precision": "int8", "metrics": {"auc": 0.95, "sensitivity": 0.9, "specificity": 0.8, "accuracy": 0.85},
              "latency_ms": {"p50": 0.123, "p99": 0.2}, "size_bytes": 1_400_000, "params": 1_000_000, "macs": 3_000_000}
             for n in NAMES]
    return {"target": {"name": "generic-cpu"}, "candidates": cands, "shipped": NAMES[1]}


@pytest.mark.parametrize("columns", [40, 80])
def test_the_compress_table_in_a_pipe_has_one_whole_line_per_candidate(tmp_path, monkeypatch, capsys, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    (tmp_path / "report.json").write_text(json.dumps(_report()))
    _print_table(tmp_path)
    out = capsys.readouterr().out
    assert "…" not in out and "\x1b" not in out
    for name in NAMES:
        (row,) = [line for line in out.splitlines() if name in line]
        assert "0.9500" in row and "1.3 MiB" in row  # the whole row on the name's line
    assert f"{NAMES[1]} ✔ shipped" in out


def test_a_long_log_line_stays_one_line_in_a_pipe(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "40")
    line = "  stage distill: " + "student step figures " * 10
    log_console().print(line, highlight=False)
    assert capsys.readouterr().err == line + "\n"


def test_edgekd_warnings_print_as_one_warning_line_and_others_go_to_pythons_printer(monkeypatch, capsys):
    import warnings

    import edgekd.prune.pruner as pruner

    passed_on = []  # stands in for the printer log_console found (Python's; pytest's recorder here)
    monkeypatch.setattr(warnings, "showwarning", lambda message, category, filename, *a: passed_on.append(
        (str(message), category, filename)))  # log_console replaces it; monkeypatch puts the real one back
    monkeypatch.setenv("COLUMNS", "40")
    log_console()
    msg = "pruning could not reach 802920 MACs (the smallest trial had 2309578): [k/6] lower --prune-ratio"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn_explicit(msg, RuntimeWarning, pruner.__file__, 210)
        warnings.warn_explicit("from elsewhere", UserWarning, "/some/library/mod.py", 7)
    assert capsys.readouterr().err == f"warning: {msg}\n"  # one line, brackets kept, no file:line
    assert passed_on == [("from elsewhere", UserWarning, "/some/library/mod.py")]
