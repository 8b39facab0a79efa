"""Target profiles: every shipped profile parses; bad profiles fail with the key and the fix;
``edgekd targets list/show`` print every name whole (pipe, narrow terminal) and JSON for scripts."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.errors import TargetError
from edgekd.targets import (
    PRECISIONS,
    RUNTIMES,
    list_targets,
    load_target,
    parse_profile,
)

VALID = "name: t\nruntime: openvino\nprecisions: [int8, fp32]\n"


def test_the_cpu_targets_exist():
    assert {"intel-cpu", "generic-cpu"} <= set(list_targets())


@pytest.mark.parametrize("name", list_targets())
def test_every_shipped_profile_is_valid(name):
    p = load_target(name)
    assert p.name == name, "a profile's name must match its file name"
    assert p.runtime in RUNTIMES
    assert p.precisions and set(p.precisions) <= set(PRECISIONS)
    assert p.threads >= 1 and p.batch >= 1
    assert p.default_student


def test_cpu_targets_pick_their_runtime():
    assert load_target("intel-cpu").runtime == "openvino"
    assert load_target("generic-cpu").runtime == "onnxruntime"


def test_unknown_target_suggests_the_closest_name():
    with pytest.raises(TargetError, match="did you mean 'intel-cpu'"):
        load_target("intel-cpus")


@pytest.mark.parametrize(
    "text, message",
    [
        (VALID + "thread: 2\n", "unknown key 'thread' (did you mean 'threads'?)"),
        ("runtime: openvino\nprecisions: [fp32]\n", "missing required key 'name'"),
        ("name: t\nruntime: openvin\nprecisions: [fp32]\n", "did you mean 'openvino'"),
        ("name: t\nruntime: openvino\nprecisions: [int4]\n", "precision 'int4' is not one of"),
        ("name: t\nruntime: openvino\nprecisions: []\n", "'precisions'"),
        (VALID + "threads: 0\n", "'threads' is 0, expected an integer >= 1"),
        (VALID + "threads: two\n", "'threads'"),
        (VALID + "input_size: 4096\n", "'input_size'"),
        (VALID + "latency_budget_ms: -1\n", "'latency_budget_ms'"),
        (VALID + "gpu_fallback: maybe\n", "'gpu_fallback'"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_profiles_name_the_key_and_the_fix(text, message):
    with pytest.raises(TargetError) as err:
        parse_profile(text, source="bad.yaml")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_profile_can_be_loaded_from_a_path(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text(VALID + "threads: 4\n")
    p = load_target(f)
    assert (p.name, p.threads, p.precisions) == ("t", 4, ("int8", "fp32"))


# --------------------------------------------------------------------------- the CLI

LISTED = ("name", "runtime", "precisions", "default_student", "description")


def _targets(*args: str, columns: int = 80):
    res = CliRunner().invoke(app, ["targets", *args], env={"COLUMNS": str(columns)})
    assert res.exit_code == 0, res.output
    return res.stdout


@pytest.mark.parametrize("columns", [40, 80, 200])
def test_targets_list_in_a_pipe_is_one_plain_line_per_target_with_its_full_name(columns):
    lines = _targets("list", columns=columns).splitlines()
    assert [line.split("\t")[0] for line in lines] == list_targets()
    for line in lines:
        name, runtime, precisions, student, description = line.split("\t")
        p = load_target(name)
        assert (runtime, precisions.split(","), student, description) == (
            p.runtime, list(p.precisions), p.default_student, p.description)
    assert "…" not in "".join(lines) and "\x1b" not in "".join(lines)


def test_on_a_wide_terminal_a_table_shows_every_full_name_and_a_narrow_one_gets_lines(monkeypatch):
    monkeypatch.setattr("edgekd._term.interactive", lambda stream: True)
    table = _targets("list", columns=120)
    assert "┃ target" in table and "…" not in table
    for name in list_targets():
        p = load_target(name)
        assert f"│ {name} " in table and f"│ {p.default_student} " in table
    narrow = _targets("list", columns=40)
    assert [line.split("\t")[0] for line in narrow.splitlines()] == list_targets()


def test_targets_list_json_is_the_listed_fields_of_every_profile():
    rows = json.loads(_targets("list", "--json", columns=40))
    assert rows == [{k: load_target(n).to_dict()[k] for k in LISTED} for n in list_targets()]
    assert [r["name"] for r in rows] == list_targets() and all(isinstance(r["precisions"], list) for r in rows)


@pytest.mark.parametrize("name", list_targets())
def test_targets_show_json_is_the_resolved_profile(name):
    assert json.loads(_targets("show", name, "--json")) == load_target(name).to_dict()


def test_targets_show_an_unknown_name_fails_on_stderr_with_nothing_on_stdout():
    res = CliRunner().invoke(app, ["targets", "show", "intel-cpuu", "--json"])
    assert res.exit_code == 2 and res.stdout == ""
    assert "unknown target 'intel-cpuu' (did you mean 'intel-cpu'?)" in res.stderr
