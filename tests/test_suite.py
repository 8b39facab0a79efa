"""Benchmark suites: a strict file format, the run matrix, resume after an interruption with the
same aggregate, not-shipped and failed runs recorded, stale runs re-run, teachers trained once.

Most tests run the suite with a stand-in for ``compress`` that publishes a report.json through
the real staging folder (atomic, like compress) with figures derived from the run's config, so
the aggregate is deterministic; one test runs the real pipeline on a tiny suite.
"""
from __future__ import annotations

import csv
import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.errors import InputError, LoweringError, NotShippedError
from edgekd.stagecache import staging
from edgekd.suites.run import TeacherCache, run_state, run_suite
from edgekd.suites.spec import load_suite, parse_suite, run_config

SUITE = """
name: demo
datasets:
  syn: {path: syn.npz}
teachers:
  small: {spec: "timm:resnet10t", weights: w.safetensors}
targets: [intel-cpu, generic-cpu]
settings:
  a: {prune_ratio: 0.5, max_steps: 4, image_size: 32, mean: 0.4}
  b: {prune_ratio: 0.8, max_steps: 4, quantize: false}
"""


@pytest.fixture
def suite_file(tmp_path) -> Path:
    (tmp_path / "syn.npz").write_bytes(b"placeholder: the stand-in compress never reads it")
    (tmp_path / "w.safetensors").write_bytes(b"placeholder")
    path = tmp_path / "demo.yaml"
    path.write_text(SUITE)
    return path


# --------------------------------------------------------------------------- a stand-in for compress


def _figure(cfg, salt: str) -> float:
    """A number in [0, 1) fixed by the run's config: deterministic 'measurements'."""
    key = json.dumps({k: v for k, v in cfg.to_dict().items() if k not in ("out", "overwrite")}, sort_keys=True) + salt
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32


def fake_report(cfg) -> dict:
    auc_t, auc_s = 0.95, 0.90 + 0.05 * _figure(cfg, "auc")
    ships = (0.01 if cfg.max_auc_drop is None else cfg.max_auc_drop) >= 0

    def cand(name, backend, precision, role, auc, p50, size):
        return {"name": name, "stage": "lower", "backend": backend, "precision": precision, "role": role,
                "metrics": {"auc": auc, "sensitivity": 0.9, "specificity": 0.8, "accuracy": 0.85},
                "latency_ms": {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.3, "throughput_ips": 1e3 / p50,
                               "ci95_rel": 0.005, "iterations": 400, "stop": "stable",
                               "at_batch": {"batch": 8, "throughput_ips": 8e3 / p50 / 0.8}},
                "memory_mb": {"session_mb": 20.0, "peak_mb": 80.0}, "size_bytes": size, "params": 1, "macs": 1}

    runtime = "openvino" if cfg.target == "intel-cpu" else "onnxruntime"
    cands = [cand("teacher-torch-fp32", "torch", "fp32", "baseline", auc_t, 6.5, None),
             cand("teacher-onnxruntime-fp32", "onnxruntime", "fp32", "baseline", auc_t, 1.5, 44_000_000),
             cand("teacher-openvino-int8", "openvino", "int8", "baseline", auc_t, 0.5, 11_000_000),
             cand(f"student-fp32-{runtime}", runtime, "fp32", "student", auc_s, 0.2 + _figure(cfg, "p50") / 10,
                  1_400_000)]
    shipped = cands[-1] if ships else None
    sp = {}
    if shipped:
        p50 = shipped["latency_ms"]["p50"]
        sp = {"latency_vs_teacher-torch-fp32": 6.5 / p50, "latency_vs_teacher-openvino-int8": 0.5 / p50,
              "size_vs_teacher-onnxruntime-fp32": 44_000_000 / 1_400_000}
    from edgekd.tasks import get_task

    resolved = get_task(cfg.task).with_defaults(cfg).to_dict()  # compress records its config as the task resolved it
    return {"created": "2026-01-01T00:00:00+00:00", "seconds": 12.0, "config": resolved,
            "machine": {"cpu": "Test CPU", "isa": ["AVX2"], "threads": 2, "loadavg": [0.5, 0.5, 0.5]},
            "stages": {"distill": {"student": "lcnet_100"}}, "candidates": cands,
            "shipped": shipped["name"] if shipped else None,
            "shipping": {"teacher_auc": auc_t, "max_auc_drop": cfg.max_auc_drop, "reason": "test"},
            "speedups": sp, "precision_notes": []}


class FakeCompress:
    """Publishes a report like compress does; can interrupt or fail a chosen call."""

    def __init__(self, interrupt_at: int | None = None, fail_ids: tuple[str, ...] = ()) -> None:
        self.calls: list[str] = []
        self.interrupt_at, self.fail_ids = interrupt_at, fail_ids

    def __call__(self, cfg, log=print):
        self.calls.append(cfg.out.name)
        with staging(cfg.out, cfg.overwrite) as work:
            (work / "models").mkdir()
            (work / "models" / "half-written.onnx").write_bytes(b"...")
            if len(self.calls) == self.interrupt_at:
                raise KeyboardInterrupt  # Ctrl-C in the middle of a run
            if cfg.out.name in self.fail_ids:
                raise LoweringError("ONNX export failed (test)")
            (work / "report.json").write_text(json.dumps(fake_report(cfg)))
            if cfg.max_auc_drop is not None and cfg.max_auc_drop < 0:
                raise NotShippedError("nothing shipped: test budget")


def stable(results: dict) -> dict:
    """The aggregate without the time it was written."""
    return {k: v for k, v in results.items() if k != "created"}


# --------------------------------------------------------------------------- the file format


def test_the_matrix_is_teachers_x_datasets_x_settings_x_targets(suite_file):
    suite = load_suite(suite_file)
    ids = [r.id for r in suite.runs()]
    assert ids == ["small--syn--intel-cpu--a", "small--syn--generic-cpu--a",
                   "small--syn--intel-cpu--b", "small--syn--generic-cpu--b"]
    assert suite.datasets[0].path == suite_file.parent / "syn.npz"  # relative to the suite file


def test_settings_map_onto_the_compress_config(suite_file):
    run = load_suite(suite_file).runs()[0]
    cfg = run_config(run, Path("o"), Path("w"))
    assert (cfg.target, cfg.prune.ratio, cfg.distill.max_steps, cfg.preprocessing.image_size) == ("intel-cpu", 0.5, 4, 32)
    assert cfg.preprocessing.mean == (0.4,) and cfg.overwrite and cfg.teacher == "timm:resnet10t"
    assert run_config(load_suite(suite_file).runs()[2], Path("o"), None).quant.enabled is False


@pytest.mark.parametrize("text, message", [
    (SUITE.replace("settings:", "setings:"), "unknown key 'setings' (did you mean 'settings'?)"),
    (SUITE.replace("prune_ratio: 0.5", "prune_ration: 0.5"), "unknown key 'prune_ration' (did you mean 'prune_ratio'?)"),
    (SUITE.replace("max_steps: 4, quantize", "max_steps: one, quantize"), "'max_steps' is 'one', expected an integer"),
    (SUITE.replace("max_steps: 4, quantize", "max_steps: null, quantize"), "'max_steps' is None, expected an integer"),
    (SUITE.replace("intel-cpu, generic", "intel-cpuu, generic"), "unknown target 'intel-cpuu'"),
    (SUITE.replace(", weights: w.safetensors", ""), "needs 'weights' (a file) or 'train'"),
    (SUITE.replace("weights: w.safetensors", "weights: w.safetensors, train: {epochs: 2}"), "'train' needs spec"),
    (SUITE.replace("  a: {", "  a--b: {"), "single '-'"),
    ("name: x\n", "missing required key 'datasets'"),
    ("- a list\n", "must be a YAML mapping"),
    ("name: [unclosed\n", "not valid YAML at line"),
])
def test_a_bad_suite_file_is_one_line_that_names_the_fix(tmp_path, text, message):
    with pytest.raises(InputError) as err:
        parse_suite(text, source=tmp_path / "s.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_null_resets_only_settings_whose_default_is_null(tmp_path):
    suite = parse_suite(SUITE.replace("image_size: 32", "image_size: null, student: null"), source=tmp_path / "s.yaml")
    assert suite.settings["a"]["image_size"] is None and suite.settings["a"]["student"] is None


# --------------------------------------------------------------------------- running and resuming


def test_an_interrupted_suite_resumes_and_aggregates_like_an_uninterrupted_one(suite_file, tmp_path):
    suite = load_suite(suite_file)
    straight = run_suite(suite, tmp_path / "straight", run_fn=FakeCompress(), log=lambda m: None)
    assert straight.ran == [r.id for r in suite.runs()] and straight.results["summary"]["shipped"] == 4

    out, lines = tmp_path / "resumed", []
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, out, run_fn=FakeCompress(interrupt_at=2), log=lines.append)
    # the first run is published, the interrupted one left nothing behind, the aggregate says so
    assert (out / "runs" / suite.runs()[0].id / "report.json").is_file()
    assert sorted(p.name for p in (out / "runs").iterdir()) == [suite.runs()[0].id]
    partial = json.loads((out / "results.json").read_text())
    assert [r["status"] for r in partial["runs"]] == ["shipped", "pending", "pending", "pending"]

    again, lines = FakeCompress(), []
    resumed = run_suite(suite, out, run_fn=again, log=lines.append)
    assert again.calls == [r.id for r in suite.runs()[1:]]
    assert resumed.skipped == [suite.runs()[0].id]
    assert any("finished earlier, skipped" in ln for ln in lines)
    assert stable(resumed.results) == stable(straight.results)
    for name in ("results.csv", "candidates.csv"):
        assert (out / name).read_text() == (tmp_path / "straight" / name).read_text()
    # a third call runs nothing
    third = FakeCompress()
    assert run_suite(suite, out, run_fn=third, log=lambda m: None).ran == [] and third.calls == []


def test_the_aggregate_puts_shipped_figures_next_to_the_two_baselines(suite_file, tmp_path):
    res = run_suite(load_suite(suite_file), tmp_path / "o", run_fn=FakeCompress(), log=lambda m: None).results
    row = res["runs"][0]
    assert row["status"] == "shipped" and row["shipped"] == "student-fp32-openvino" and row["student"] == "lcnet_100"
    assert row["teacher_torch_fp32_p50_ms"] == 6.5 and row["teacher_openvino_int8_p50_ms"] == 0.5
    assert row["speedup_vs_torch_fp32"] == pytest.approx(6.5 / row["shipped_p50_ms"])
    assert row["speedup_vs_openvino_int8"] == pytest.approx(0.5 / row["shipped_p50_ms"])
    assert row["auc_drop"] == pytest.approx(0.95 - row["shipped_auc"])
    assert row["batch"] == 8 and row["shipped_session_mb"] == 20.0
    with open(tmp_path / "o" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and float(rows[0]["shipped_p50_ms"]) == pytest.approx(row["shipped_p50_ms"])
    with open(tmp_path / "o" / "candidates.csv") as f:
        assert len(list(csv.DictReader(f))) == 4 * 4
    md = (tmp_path / "o" / "results.md").read_text()
    assert "Test CPU (AVX2), 2 threads" in md and f"{row['shipped_p50_ms']:.3f}" in md


def test_a_not_shipped_run_is_finished_with_shipped_null(suite_file, tmp_path):
    suite = parse_suite(suite_file.read_text().replace("quantize: false", "quantize: false, max_auc_drop: -1"),
                        source=suite_file)
    res = run_suite(suite, tmp_path / "o", run_fn=FakeCompress(), log=lambda m: None)
    assert [r["status"] for r in res.results["runs"]] == ["shipped", "shipped", "not_shipped", "not_shipped"]
    assert res.results["runs"][2]["shipped"] is None and res.results["runs"][2]["teacher_auc"] == 0.95
    again = FakeCompress()
    assert run_suite(suite, tmp_path / "o", run_fn=again, log=lambda m: None).skipped and again.calls == []


def test_a_failed_run_is_recorded_the_suite_goes_on_and_retries_it_next_time(suite_file, tmp_path):
    suite = load_suite(suite_file)
    bad = suite.runs()[1].id
    res = run_suite(suite, tmp_path / "o", run_fn=FakeCompress(fail_ids=(bad,)), log=lambda m: None)
    assert res.failed == {bad: "ONNX export failed (test)"}
    assert [r["status"] for r in res.results["runs"]] == ["shipped", "failed", "shipped", "shipped"]
    assert res.results["runs"][1]["error"] == "ONNX export failed (test)"
    retry = FakeCompress()
    run_suite(suite, tmp_path / "o", run_fn=retry, log=lambda m: None)
    assert retry.calls == [bad]


def test_a_run_recorded_before_a_setting_existed_is_still_finished(suite_file, tmp_path):
    out = tmp_path / "o"
    suite = load_suite(suite_file)
    run_suite(suite, out, run_fn=FakeCompress(), log=lambda m: None)
    first = suite.runs()[0]
    report = out / "runs" / first.id / "report.json"
    old = json.loads(report.read_text())
    del old["config"]["data_options"]  # a report.json written before --window/--frame/--split-by existed
    report.write_text(json.dumps(old))
    cfg = run_config(first, out / "runs" / first.id, first.teacher.weights)
    assert run_state(out / "runs" / first.id, cfg) == "finished"
    cfg.data_options.frame = 1  # a real change still makes it stale
    assert run_state(out / "runs" / first.id, cfg) == "stale"


def test_an_edited_setting_reruns_only_its_runs_and_force_reruns_all(suite_file, tmp_path):
    out = tmp_path / "o"
    run_suite(load_suite(suite_file), out, run_fn=FakeCompress(), log=lambda m: None)
    suite_file.write_text(SUITE.replace("prune_ratio: 0.8", "prune_ratio: 0.7"))
    edited = load_suite(suite_file)
    assert [run_state(out / "runs" / r.id, run_config(r, out / "runs" / r.id, r.teacher.weights))
            for r in edited.runs()] == ["finished", "finished", "stale", "stale"]
    fake = FakeCompress()
    run_suite(edited, out, run_fn=fake, log=lambda m: None)
    assert fake.calls == [r.id for r in edited.runs()[2:]]
    fake = FakeCompress()
    run_suite(edited, out, run_fn=fake, force=True, only=["*intel-cpu*"], log=lambda m: None)
    assert fake.calls == ["small--syn--intel-cpu--a", "small--syn--intel-cpu--b"]


def test_a_killed_run_leaves_a_staging_folder_that_the_next_call_removes(suite_file, tmp_path):
    suite = load_suite(suite_file)
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid names a process that is gone
    leftover = tmp_path / "o" / "runs" / f".{suite.runs()[0].id}.partial-{dead.pid}-1700000000000"
    (leftover / "models").mkdir(parents=True)  # what SIGKILL in the middle of compress leaves
    res = run_suite(suite, tmp_path / "o", run_fn=FakeCompress(), log=lambda m: None)
    assert not leftover.exists() and len(res.ran) == 4
    assert sorted(p.name for p in (tmp_path / "o" / "runs").iterdir()) == sorted(r.id for r in suite.runs())


def test_the_staging_folder_of_a_live_concurrent_run_is_kept(suite_file, tmp_path):
    suite = load_suite(suite_file)
    live = subprocess.Popen(["sleep", "60"])  # another edgekd still writing its run
    try:
        busy = tmp_path / "o" / "runs" / f".{suite.runs()[0].id}.partial-{live.pid}-1700000000000"
        (busy / "models").mkdir(parents=True)
        (busy / "models" / "half-written.onnx").write_bytes(b"...")
        res = run_suite(suite, tmp_path / "o", run_fn=FakeCompress(), log=lambda m: None)
        assert len(res.ran) == 4 and (busy / "models" / "half-written.onnx").read_bytes() == b"..."
    finally:
        live.kill()
        live.wait()


def test_missing_inputs_fail_before_any_run(suite_file, tmp_path):
    (suite_file.parent / "syn.npz").unlink()
    fake = FakeCompress()
    with pytest.raises(InputError, match="dataset 'syn' at .* does not exist"):
        run_suite(load_suite(suite_file), tmp_path / "o", run_fn=fake, log=lambda m: None)
    assert fake.calls == []


# --------------------------------------------------------------------------- teachers and the CLI


def _tiny_npz(path: Path, n: int = 48) -> Path:
    from edgekd.data import make_synthetic_xrays

    arrays = {}
    for i, split in enumerate(("train", "val", "test")):
        x, y = make_synthetic_xrays(n, size=28, seed=i)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y.reshape(-1, 1)
    np.savez(path, **arrays)
    return path


def test_a_train_if_missing_teacher_is_trained_once_and_reused(tmp_path):
    _tiny_npz(tmp_path / "syn.npz")
    text = SUITE.replace('weights: w.safetensors', 'train: {epochs: 1, batch_size: 16}').replace("timm:resnet10t", "timm:resnet10t")
    run = parse_suite(text, source=tmp_path / "s.yaml").runs()[0]
    logs: list[str] = []
    cache = TeacherCache(tmp_path / "teachers", logs.append)
    path = cache.ensure(run)
    assert path.is_file() and path.suffix == ".safetensors" and any("training resnet10t" in m for m in logs)
    note = json.loads(path.with_suffix(".json").read_text())
    assert note["recipe"]["image_size"] == 32 and note["recipe"]["epochs"] == 1 and 0 <= note["best_val_auc"] <= 1
    mtime, logs[:] = path.stat().st_mtime, []
    assert cache.ensure(run) == path and path.stat().st_mtime == mtime and logs == []
    # another image size is another teacher
    other = parse_suite(text, source=tmp_path / "s.yaml").runs()[2]
    assert cache.weights_path(other) != path


def test_cli_lists_the_matrix_and_refuses_an_unknown_suite(suite_file, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["bench", str(suite_file), "--out", str(tmp_path / "o"), "--list"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == "small--syn--intel-cpu--a\tmissing"
    res = runner.invoke(app, ["bench", "pneumonia-cpuu"])
    assert res.exit_code == 2 and "unknown suite 'pneumonia-cpuu' (did you mean 'pneumonia-cpu'?)" in res.stderr


def test_cli_in_a_pipe_prints_the_results_table_and_summary_whole(suite_file, tmp_path):
    suite = load_suite(suite_file)
    run_suite(suite, tmp_path / "o", run_fn=FakeCompress(), log=lambda m: None)  # every run finished
    res = CliRunner().invoke(app, ["bench", str(suite_file), "--out", str(tmp_path / "o")], env={"COLUMNS": "40"})
    assert res.exit_code == 0, res.output
    assert "…" not in res.stdout and "\x1b" not in res.stdout
    for run in suite.runs():
        (row,) = [line for line in res.stdout.splitlines() if run.id in line]
        assert "shipped" in row and "→" in row  # the whole row on the run's line
    summary = [line for line in res.stderr.splitlines() if line.startswith("suite demo:")]
    assert summary and summary[0].endswith("and results.csv")  # one line, not broken at 40 columns


def test_the_shipped_pneumonia_suite_parses(monkeypatch):
    monkeypatch.delenv("EDGEKD_PNEUMONIA", raising=False)
    suite = load_suite("pneumonia-cpu")
    settings = ["default", "depth6", "depth6-r90", "depth8-r85"]
    assert [r.id for r in suite.runs()] == [f"resnet18--pneumonia--{t}--{s}" for s in settings
                                            for t in ("intel-cpu", "generic-cpu")]
    assert suite.datasets[0].path.name == "pneumoniamnist.npz" and suite.datasets[0].path.parent.name == "data"
    assert suite.teachers[0].train.epochs == 8 and suite.settings["default"]["prune_ratio"] == 0.8
    assert suite.settings["depth6-r90"]["prune_depth"] == 6 and suite.settings["depth6-r90"]["prune_ratio"] == 0.9


def test_a_tiny_suite_runs_the_real_pipeline_end_to_end(tmp_path):
    """One real run: trained-if-missing teacher, compress, memory and batch-N figures, aggregate."""
    _tiny_npz(tmp_path / "syn.npz", n=64)
    (tmp_path / "tiny.yaml").write_text("""
name: tiny
datasets: {syn: {path: syn.npz}}
teachers: {r10: {spec: "timm:resnet10t", train: {epochs: 1, batch_size: 16}}}
targets: [generic-cpu]
settings:
  quick: {student: mobilenetv3_small_050, max_steps: 4, augment: none, prune_ratio: 0, prune_depth: 0, quantize: false,
          calibration_samples: 16, iterations: 5, max_iterations: 5, warmup: 1, batch: 2, max_auc_drop: 1.0,
          max_sensitivity_drop: 1.0}
""")
    res = CliRunner().invoke(app, ["bench", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "o"), "--quiet"])
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    (row,) = results["runs"]
    report = json.loads((tmp_path / "o" / row["report"]).read_text())
    shipped = next(c for c in report["candidates"] if c["name"] == report["shipped"])
    assert row["status"] == "shipped" and row["shipped"] == shipped["name"] and row["shipped_backend"] == "onnxruntime"
    assert row["shipped_p50_ms"] == shipped["latency_ms"]["p50"] and shipped["latency_ms"]["iterations"] == 5
    assert shipped["latency_ms"]["at_batch"]["batch"] == 2 and row["shipped_session_mb"] > 0
    assert row["teacher_torch_fp32_p50_ms"] > 0 and row["teacher_openvino_int8_p50_ms"] > 0
    assert row["speedup_vs_torch_fp32"] == pytest.approx(report["speedups"]["latency_vs_teacher-torch-fp32"])
    assert report["precision_notes"] == [] and row["int8_vs_fp32_on_target"] is None  # no INT8 student here
    assert report["machine"]["loadavg"] and "AVX2" in results["machines"][0] or report["machine"]["arch"] != "x86_64"
    again = CliRunner().invoke(app, ["bench", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "o")])
    assert again.exit_code == 0 and "finished earlier, skipped" in again.output
