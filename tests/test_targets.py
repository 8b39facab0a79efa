"""Target profiles: every shipped profile parses; bad profiles fail with the key and the fix."""
from __future__ import annotations

import pytest

from edgekd.errors import TargetError
from edgekd.targets import PRECISIONS, RUNTIMES, list_targets, load_target, parse_profile

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
