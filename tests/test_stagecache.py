"""The stage cache: finished stages are reused by key, interrupted ones leave nothing that looks finished."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from edgekd.stagecache import DONE, StageStore, digest


def store(tmp_path, **kw) -> tuple[StageStore, list[str]]:
    lines: list[str] = []
    return StageStore(tmp_path / "cache", log=lines.append, **kw), lines


def write(name: str, text: str):
    def produce(folder):
        (folder / name).write_text(text)
        return {"wrote": name}
    return produce


def test_a_finished_stage_is_reused_and_says_so(tmp_path):
    s, lines = store(tmp_path)
    key = s.key("distill", "inputs", {"epochs": 3})
    first = s.run("distill", key, write("a.txt", "weights"))
    calls = []
    second = s.run("distill", key, lambda folder: calls.append(1))
    assert calls == [] and second.reused and not first.reused
    assert second.path == first.path and second.info == {"wrote": "a.txt"}
    assert any("reusing finished stage distill" in line for line in lines)


def test_keys_chain_so_a_changed_setting_changes_every_later_key(tmp_path):
    s, _ = store(tmp_path)
    distill_a, distill_b = s.key("distill", "t", {"epochs": 3}), s.key("distill", "t", {"epochs": 4})
    assert distill_a != distill_b
    assert s.key("prune", distill_a, {"ratio": 0.5}) != s.key("prune", distill_b, {"ratio": 0.5})
    assert s.key("prune", distill_a, {"ratio": 0.5}) == s.key("prune", distill_a, {"ratio": 0.5})
    assert digest((1, 2)) == digest([1, 2])  # JSON-canonical: a tuple and a list of the same values agree


def test_force_runs_the_stage_again(tmp_path):
    s, _ = store(tmp_path)
    key = s.key("x")
    s.run("x", key, write("a.txt", "old"))
    forced, _ = store(tmp_path, force=True)
    entry = forced.run("x", key, write("a.txt", "new"))
    assert not entry.reused and entry.file("a.txt").read_text() == "new"


def test_a_stage_that_fails_leaves_no_entry(tmp_path):
    s, _ = store(tmp_path)
    key = s.key("x")

    def boom(folder):
        (folder / "half.bin").write_bytes(b"\0" * 10)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        s.run("x", key, boom)
    assert s.lookup("x", key) is None
    assert list((tmp_path / "cache").iterdir()) == []  # not even the temporary folder


def test_a_changed_cached_file_is_detected_and_the_stage_runs_again(tmp_path):
    s, lines = store(tmp_path)
    key = s.key("x")
    entry = s.run("x", key, write("a.txt", "good"))
    entry.file("a.txt").write_text("evil")
    again = s.run("x", key, write("a.txt", "good"))
    assert not again.reused and again.file("a.txt").read_text() == "good"
    assert any("changed since it was written" in line for line in lines)


def test_an_entry_without_done_json_is_not_finished(tmp_path):
    s, _ = store(tmp_path)
    key = s.key("x")
    entry = s.run("x", key, write("a.txt", "a"))
    (entry.path / DONE).unlink()
    assert s.lookup("x", key) is None


def test_temporary_folders_of_killed_runs_are_swept(tmp_path):
    s, _ = store(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / "cache" / f".tmp-x-abc-{int(dead.stdout)}-1"
    stale.mkdir(parents=True)
    live = tmp_path / "cache" / f".tmp-x-abc-{os.getpid()}-2"
    live.mkdir()
    s.run("y", s.key("y"), write("b.txt", "b"))
    assert not stale.exists() and live.exists()


def test_done_json_records_every_file_hash(tmp_path):
    s, _ = store(tmp_path)
    entry = s.run("x", s.key("x"), write("a.txt", "abc"))
    meta = json.loads((entry.path / DONE).read_text())
    assert meta["files"]["a.txt"]["size"] == 3 and len(meta["files"]["a.txt"]["sha256"]) == 64


def test_each_stage_starts_from_its_own_seed(tmp_path):
    s, _ = store(tmp_path, seed=7)
    draws = {}
    for stage in ("a", "b"):
        torch.manual_seed(12345)  # whatever happened before must not matter
        s.run(stage, s.key(stage), lambda folder, stage=stage: draws.setdefault(stage, torch.rand(3).tolist()) and None)
    again, _ = store(tmp_path / "other", seed=7)
    again.run("a", again.key("a"), lambda folder: draws.setdefault("a2", torch.rand(3).tolist()) and None)
    assert draws["a"] == draws["a2"] and draws["a"] != draws["b"]


@pytest.mark.parametrize("arch", ["lcnet_050", "mobilenetv3_small_050", "resnet10t"])
def test_a_pruned_student_round_trips_without_pickle(tmp_path, arch):
    import torch_pruning as tp

    from edgekd.models import create_student
    from edgekd.prune.serialize import load_pruned, save_pruned

    build = lambda: create_student(arch, 1, 2, seed=0).eval()  # noqa: E731
    model, x = build(), torch.rand(2, 1, 32, 32)
    tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
                              ignored_layers=[model.get_classifier()], round_to=8).step()
    save_pruned(model, build(), tmp_path)
    loaded = load_pruned(build, tmp_path)
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert json.loads((tmp_path / "pruned.structure.json").read_text())  # channels changed somewhere
