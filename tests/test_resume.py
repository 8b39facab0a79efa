"""A real ``edgekd compress`` killed (SIGKILL) at several points resumes to the same result as an
uninterrupted run; Ctrl-C says where it stopped and exits 130; a changed setting re-runs exactly
the stages after it; the same seed gives the same metrics and the same model bytes.

Run A goes through uninterrupted with its own stage cache. Run B, with another cache, is killed
once right after the distill stage finished and once in the middle of the quantize stage, then
completes: every stage of B was computed independently of A (in three processes), so B == A
shows both that resuming changes nothing and that the pipeline is deterministic.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import QUICK

pytestmark = pytest.mark.filterwarnings("ignore")

# TensorRT target: the shipped candidate is chosen by the profile's precision order, not by host
# latency, so the whole result is deterministic; INT8 is allowed, so the quantize stage runs.
TARGET = ["--target", "jetson-orin-nano", "--max-auc-drop", "1.0", "--max-sensitivity-drop", "1.0"]
STAGES = ("teacher-signal", "baselines", "distill", "prune", "lower-fp32", "quantize", "lower-int8")
METRICS = ("accuracy", "auc", "sensitivity", "specificity", "threshold")


def command(npz: Path, teacher: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", "from edgekd.cli import main; main()", "compress", "--teacher", str(teacher),
            "--data", str(npz), "--out", str(out), "--cache-dir", str(cache), *QUICK, *TARGET, *extra]


def env() -> dict[str, str]:
    e = dict(os.environ, EDGEKD_NO_PROGRESS="1", OMP_NUM_THREADS="2")
    e.pop("PYTEST_CURRENT_TEST", None)
    return e


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    # a default SIGINT disposition even when the tests themselves run in a background job (which ignores it)
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env(), text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(proc: subprocess.Popen, cache: Path, pattern: str, timeout: float = 900) -> Path:
    """Poll until ``cache/pattern`` exists; fail if the run ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hits = sorted(cache.glob(pattern))
        if hits:
            return hits[0]
        if proc.poll() is not None:
            pytest.fail(f"compress ended (exit {proc.returncode}) before {pattern} appeared")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"{pattern} did not appear within {timeout} s")


def entries(cache: Path) -> dict[str, Path]:
    return {p.name.rsplit("-", 1)[0]: p for p in cache.iterdir() if not p.name.startswith(".")}


def model_hashes(out: Path) -> dict[str, str]:
    files = [p for p in sorted((out / "models").rglob("*")) if p.is_file()]
    files += [out / "bundle" / "model.onnx"]
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def without_seconds(obj):
    """Stage records minus wall-clock timings (the only thing allowed to differ)."""
    if isinstance(obj, dict):
        return {k: without_seconds(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [without_seconds(v) for v in obj]
    return obj


def figures(out: Path) -> dict[str, dict]:
    report = json.loads((out / "report.json").read_text())
    return {c["name"]: {k: c["metrics"][k] for k in METRICS} for c in report["candidates"]}


@pytest.fixture(scope="module")
def runs(data_and_teacher, tmp_path_factory):
    npz, teacher = data_and_teacher
    d = tmp_path_factory.mktemp("resume")
    a = subprocess.run(command(npz, teacher, d / "a" / "out", d / "a" / "cache"), env=env(), text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1500)
    assert a.returncode == 0, a.stdout[-3000:]

    out_b, cache_b = d / "b" / "out", d / "b" / "cache"
    cmd_b = command(npz, teacher, out_b, cache_b)
    observed = {}
    # kill 1: the moment the distill stage is finished
    p = start(cmd_b, d / "b1.log")
    wait_for(p, cache_b, "distill-*/done.json")
    p.send_signal(signal.SIGKILL)
    p.wait()
    observed["after_kill_1"] = {"out_exists": out_b.exists(), "entries": sorted(entries(cache_b)),
                                "unfinished": [e.name for e in entries(cache_b).values() if not (e / "done.json").exists()]}
    # kill 2: in the middle of the quantize stage (its temporary folder exists, its entry does not)
    p = start(cmd_b, d / "b2.log")
    wait_for(p, cache_b, ".tmp-quantize-*")
    time.sleep(1.0)
    p.send_signal(signal.SIGKILL)
    p.wait()
    observed["after_kill_2"] = {"out_exists": out_b.exists(), "entries": sorted(entries(cache_b)),
                                "tmp": [q.name for q in cache_b.glob(".tmp-*")],
                                "partials": [q.name for q in out_b.parent.glob(".out.partial-*")]}
    # resume to the end
    b = subprocess.run(cmd_b, env=env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1500)
    assert b.returncode == 0, b.stdout[-3000:]
    observed["resumed_log"] = b.stdout
    observed["b2_log"] = (d / "b2.log").read_text()
    return {"a": d / "a" / "out", "b": out_b, "cache_a": d / "a" / "cache", "cache_b": cache_b, "npz": npz,
            "teacher": teacher, "dir": d, "observed": observed}


def test_a_killed_run_leaves_nothing_that_looks_finished(runs):
    k1, k2 = runs["observed"]["after_kill_1"], runs["observed"]["after_kill_2"]
    assert not k1["out_exists"] and not k2["out_exists"]  # --out appears only when a run completes
    assert k1["unfinished"] == []  # every entry in the cache is complete
    assert "distill" in k1["entries"]
    assert "quantize" not in k2["entries"] and any(t.startswith(".tmp-quantize-") for t in k2["tmp"])
    assert k2["partials"]  # the killed run's work folder is visibly partial ...
    assert not list(runs["b"].parent.glob(".out.partial-*"))  # ... and swept by the next run
    assert not list(runs["cache_b"].glob(".tmp-*"))


def test_the_resumed_run_reuses_finished_stages_and_says_so(runs):
    second, resumed = runs["observed"]["b2_log"], runs["observed"]["resumed_log"]
    for stage in ("teacher-signal", "baselines", "distill"):
        assert f"reusing finished stage {stage}" in second
    assert "reusing finished stage prune" not in second  # killed before prune had finished? no: prune ran in run 2
    for stage in ("teacher-signal", "baselines", "distill", "prune", "lower-fp32"):
        assert f"reusing finished stage {stage}" in resumed
    assert "reusing finished stage quantize" not in resumed  # killed mid-stage: computed again


def test_a_resumed_run_equals_an_uninterrupted_one(runs):
    assert figures(runs["b"]) == figures(runs["a"])
    assert model_hashes(runs["b"]) == model_hashes(runs["a"])
    ra, rb = (json.loads((runs[k] / "report.json").read_text()) for k in ("a", "b"))
    assert ra["shipped"] == rb["shipped"] is not None
    assert without_seconds(ra["stages"]) == without_seconds(rb["stages"])  # epochs, AUCs, losses, MACs


def test_same_seed_gives_the_same_model_bytes_in_every_stage_cache(runs):
    """Every stage entry (weights, ONNX, OpenVINO IR) is byte-identical between the two independent runs."""
    ea, eb = entries(runs["cache_a"]), entries(runs["cache_b"])
    assert set(ea) == set(eb) == set(STAGES)
    for stage in STAGES:
        fa, fb = (json.loads((e[stage] / "done.json").read_text())["files"] for e in (ea, eb))
        assert fa == fb, stage


def test_a_changed_setting_reruns_exactly_the_stages_after_it(runs, tmp_path):
    out = tmp_path / "out"
    cmd = command(runs["npz"], runs["teacher"], out, runs["cache_a"], "--qat-steps", "0")
    r = subprocess.run(cmd, env=env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:]
    reused = {s for s in STAGES if f"reusing finished stage {s}" in r.stdout}
    assert reused == {"teacher-signal", "baselines", "distill", "prune", "lower-fp32"}


def test_force_reruns_every_stage(runs, tmp_path):
    out = tmp_path / "out"
    cmd = command(runs["npz"], runs["teacher"], out, runs["cache_a"], "--force", "--no-quantize")
    r = subprocess.run(cmd, env=env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "reusing finished stage" not in r.stdout


def test_ctrl_c_says_where_it_stopped_and_exits_130(runs, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    p = start(command(runs["npz"], runs["teacher"], out, cache), tmp_path / "log")
    wait_for(p, cache, ".tmp-distill-*")
    p.send_signal(signal.SIGINT)
    code = p.wait(timeout=120)
    log = " ".join((tmp_path / "log").read_text().split())  # the console wraps long lines
    assert code == 130, log[-2000:]
    assert "interrupted during stage distill" in log and "run the same command again to resume" in log
    assert "Traceback" not in log
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))
    assert sorted(entries(cache)) == ["baselines", "teacher-signal"] and not list(cache.glob(".tmp-*"))
