"""Several training processes under torchrun (gloo on the CPU): the training of one process, written once.

- the distillation loop in two processes trains the weights one process trains (BatchNorm-free
  student, no augmentation: only the batch split differs; agreement to float summation order);
- ``torchrun --nproc-per-node 2 -m edgekd compress`` runs every stage, rank 0 alone writes ``--out``
  and the stage cache, and its figures are those of a one-process run within a stated tolerance;
- a process killed mid-training ends the run with a non-zero exit and no ``--out``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from edgekd import _dist
from edgekd.cli import app
from edgekd.errors import InputError

from .conftest import QUICK

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_ddp_worker.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
runner = CliRunner()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "EDGEKD_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def test_one_process_joins_no_group_and_nonsense_ranks_are_refused():
    assert _dist.from_env({}) == _dist.ONE and not _dist.ONE.distributed
    assert _dist.from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == _dist.World(1, 2, 1)
    for env in ({"RANK": "2", "WORLD_SIZE": "2"}, {"RANK": "x", "WORLD_SIZE": "2"}, {"WORLD_SIZE": "0"}):
        with pytest.raises(InputError, match="torchrun"):
            _dist.from_env(env)


def test_each_process_takes_its_part_of_every_batch_and_needs_two_images(monkeypatch):
    batch = torch.arange(10)
    assert torch.equal(_dist.shard(batch), batch)  # one process: the whole batch
    monkeypatch.setattr(_dist, "_world", _dist.World(1, 2, 1, "gloo"))
    assert _dist.shard(batch).tolist() == [1, 3, 5, 7, 9]
    monkeypatch.setattr(_dist, "_world", _dist.World(0, 4, 0, "gloo"))
    _dist.check_batch(8)
    with pytest.raises(InputError, match="fewer than 2 images per process"):
        _dist.check_batch(6)


def test_two_gloo_processes_train_the_weights_one_process_trains(tmp_path):
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    for cmd, out in (([sys.executable], one), (TORCHRUN, two)):
        done = subprocess.run([*cmd, str(WORKER), str(out)], env=_env(), capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    a, b = (torch.load(p, weights_only=True) for p in (one, two))
    assert a["world"] == {"processes": 1, "backend": None} and b["world"] == {"processes": 2, "backend": "gloo"}
    assert [h["step"] for h in a["history"]] == [h["step"] for h in b["history"]] and a["best_step"] == b["best_step"]
    for k, v in a["state"].items():  # the same steps on the same batches: equal up to summation order
        torch.testing.assert_close(b["state"][k], v, rtol=1e-4, atol=1e-5)
    for ha, hb in zip(a["history"], b["history"]):
        assert hb["val_kl"] == pytest.approx(ha["val_kl"], rel=1e-3, abs=1e-6)
        assert (ha["loss"] is None) == (hb["loss"] is None)  # the whole batch's training loss, summed over processes
        if ha["loss"] is not None:
            assert hb["loss"] == pytest.approx(ha["loss"], rel=1e-4)


def _compress_args(npz: Path, teacher: Path, out: Path, cache: Path) -> list[str]:
    return ["compress", "--teacher", str(teacher), "--data", str(npz), "--out", str(out), "--cache-dir", str(cache),
            "--target", "generic-cpu", "--max-auc-drop", "1.0", "--max-sensitivity-drop", "1.0", *QUICK]


def test_torchrun_compress_writes_once_and_matches_one_process(data_and_teacher, tmp_path):
    npz, teacher = data_and_teacher
    two = tmp_path / "two"
    done = subprocess.run([*TORCHRUN, "-m", "edgekd", *_compress_args(npz, teacher, two, tmp_path / "cache2")],
                          env=_env(), capture_output=True, text=True, timeout=900, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("shipped ") == 1  # rank 0 alone reports
    report = json.loads((two / "report.json").read_text())
    assert report["training"]["device"]["processes"] == 2 and report["training"]["device"]["backend"] == "gloo"
    cache = tmp_path / "cache2"
    entries = sorted(p.name.rsplit("-", 1)[0] for p in cache.iterdir())  # <stage>-<key>
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary folder of any rank is left
    assert len(entries) == len(set(entries))  # each stage written once
    assert not list(tmp_path.glob(".two.partial-*"))

    one = tmp_path / "one"
    result = runner.invoke(app, _compress_args(npz, teacher, one, tmp_path / "cache1"))
    assert result.exit_code == 0, result.output
    ref = json.loads((one / "report.json").read_text())
    assert ref["training"]["device"]["processes"] == 1
    # the teacher's answers are the same computation; a training stage of 2 processes is another one (own key)
    names = {c: {p.name.rsplit("-", 1)[0]: p.name for p in (tmp_path / c).iterdir()} for c in ("cache1", "cache2")}
    assert names["cache1"]["teacher-signal"] == names["cache2"]["teacher-signal"]
    assert names["cache1"]["distill"] != names["cache2"]["distill"]
    by = {c["name"]: c for c in report["candidates"]}
    for c in ref["candidates"]:  # the same candidates, the same structure; the teacher's figures are identical
        assert c["name"] in by and by[c["name"]]["macs"] == c["macs"]
        if c["role"] == "teacher":
            assert by[c["name"]]["metrics"]["auc"] == pytest.approx(c["metrics"]["auc"], abs=1e-6)
    # students: two processes see the same batches split in two, so BatchNorm statistics and augmented views
    # differ; on this 16-step run the distilled student's test AUC is within 0.1 of the one-process run's
    d1, d2 = ref["candidates"], report["candidates"]
    a = next(c for c in d1 if c["name"] == "student-distilled")["metrics"]["auc"]
    b = next(c for c in d2 if c["name"] == "student-distilled")["metrics"]["auc"]
    assert abs(a - b) <= 0.1, (a, b)


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of torchrun's worker with RANK=rank (read from /proc)."""
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            env = (p / "environ").read_bytes().split(b"\0")
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in env:
            return int(p.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds torchrun's workers through /proc")
def test_a_killed_process_ends_the_run_without_output(data_and_teacher, tmp_path):
    npz, teacher = data_and_teacher
    out, log = tmp_path / "out", tmp_path / "log.txt"
    args = _compress_args(npz, teacher, out, tmp_path / "cache")
    args[args.index("--max-steps") + 1] = "4000"  # long enough to be killed in the middle of distillation
    with log.open("w") as f:
        proc = subprocess.Popen([*TORCHRUN, "-m", "edgekd", *args], env=_env(), stdout=f, stderr=subprocess.STDOUT,
                                cwd=tmp_path)
        try:
            deadline = time.monotonic() + 600
            while "distill: " not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.5)
            time.sleep(2)
            victim = _rank_pid(proc.pid, 1)
            assert victim is not None, log.read_text()[-2000:]
            os.kill(victim, signal.SIGKILL)
            rc = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert rc != 0
    assert not out.exists()  # nothing half-written where the output goes
    assert not list(tmp_path.glob(".out.partial-*"))  # rank 0 unwound and removed its staging folder


@pytest.mark.parametrize("flag, words", [(["--search"], "--search runs one process"),
                                         (["--feature-kd", "1"], "--feature-kd runs one process")])
def test_what_runs_in_one_process_only_is_refused_under_torchrun(flag, words, monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = runner.invoke(app, ["compress", *flag, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and words in result.output
    assert not (tmp_path / "o").exists()
