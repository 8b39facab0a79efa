"""`edgekd compress --search` end to end: the pipeline's own stages evaluated per configuration, the chosen
configuration run once more to ship, the search in the report, and a second run answered from the journal.

Also the low-rank stage the search's low-rank dimension runs (``CompressConfig.lowrank.energy``).
"""
from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from edgekd.cli import app

from .conftest import QUICK

pytestmark = pytest.mark.filterwarnings("ignore")
runner = CliRunner()
LOOSE = ["--max-auc-drop", "1.0", "--max-sensitivity-drop", "1.0"]


def _search(npz, teacher, out, cache, *extra):
    return runner.invoke(app, ["compress", "--teacher", str(teacher), "--data", str(npz), "--target", "generic-cpu",
                               "--out", str(out), "--cache-dir", str(cache), *LOOSE, *QUICK, "--search",
                               "--search-trials", "2", *extra])


def test_search_ships_the_chosen_configuration_reports_it_and_resumes_from_its_journal(data_and_teacher, tmp_path):
    npz, teacher = data_and_teacher
    cache = tmp_path / "cache"
    first = _search(npz, teacher, tmp_path / "a", cache)
    assert first.exit_code == 0, first.output
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    s = report["search"]
    assert s["latency_kind"] == "measured" and s["stopped"] == "max_trials"
    assert len(s["trials"]) == 2 and s["evaluations_run"] >= 2
    # the first configuration tried is the pipeline's defaults (the search is never worse than them on val)
    assert s["trials"][0]["config"]["prune_ratio"] == 0.8 and s["trials"][0]["config"]["prune_depth"] is None
    chosen = s["chosen"]
    assert chosen is not None and chosen["state"] == "complete" and not chosen["violations"]
    # it is the fastest configuration inside the budgets among those measured
    inside = [t for t in s["trials"] if t["state"] == "complete" and not t["violations"]]
    assert chosen["evaluation"]["latency_ms"] == min(t["evaluation"]["latency_ms"] for t in inside)
    # the shipped run is that configuration: its settings and its student
    cfg, c = report["config"], chosen["config"]
    assert cfg["prune"]["ratio"] == c["prune_ratio"] and cfg["prune"]["depth"] == c["prune_depth"]
    assert cfg["quant"]["enabled"] == (c["precision"] == "int8")
    assert report["stages"]["distill"]["student"] == c["student"]
    assert report["shipped"] is not None
    # every search figure is on val, from the lowered file on the target's runtime
    for t in s["trials"]:
        ev = t["evaluation"]
        assert 0.0 <= ev["val_metric"] <= 1.0 and ev["latency_ms"] > 0 and ev["size_bytes"] > 0 and ev["layers"] > 0
    # the report says it: a table in report.md, a table and a plot in report.html
    md = (tmp_path / "a" / "report.md").read_text()
    assert "## Search" in md and re.search(r"\| shipped \|", md)
    html = (tmp_path / "a" / "report.html").read_text()
    assert 'id="search"' in html and 'id="fig-search"' in html
    assert "search [" in first.output and "→ val" in first.output

    # the same command again (another --out, same cache): the study and its evaluations are read back, nothing runs
    again = _search(npz, teacher, tmp_path / "b", cache)
    assert again.exit_code == 0, again.output
    s2 = json.loads((tmp_path / "b" / "report.json").read_text())["search"]
    assert s2["evaluations_run"] == 0 and len(s2["trials"]) == 2 and s2["seconds_total"] >= s["seconds_total"]
    assert s2["chosen"]["config"] == chosen["config"]
    assert "search [" not in again.output  # nothing was trained again


def test_tensorrt_target_ranks_by_a_latency_model_fitted_on_merged_device_figures(data_and_teacher, tmp_path):
    npz, teacher = data_and_teacher
    # a merged report as `edgekd report --merge` leaves it: candidates with MACs and layers, device p50s
    # (made up here: 0.01 ms per MMAC + 0.02 ms per layer + 0.3 ms)
    pts = [("a", 1_000_000, 10), ("b", 5_000_000, 20), ("c", 20_000_000, 40), ("d", 2_000_000, 60)]
    merged = {"candidates": [{"name": n, "macs": m, "layers": k} for n, m, k in pts],
              "device_measurements": [{"candidate": n, "latency_ms": {"p50": 0.01 * m / 1e6 + 0.02 * k + 0.3}}
                                      for n, m, k in pts]}
    (tmp_path / "merged.json").write_text(json.dumps(merged))
    result = runner.invoke(app, ["compress", "--teacher", str(teacher), "--data", str(npz), "--target",
                                 "jetson-orin-nano", "--out", str(tmp_path / "out"), *LOOSE, *QUICK, "--search",
                                 "--search-trials", "1", "--search-latency-from", str(tmp_path / "merged.json")])
    assert result.exit_code == 0, result.output
    s = json.loads((tmp_path / "out" / "report.json").read_text())["search"]
    assert s["latency_kind"] == "predicted" and abs(s["latency_model"]["ms_per_layer"] - 0.02) < 1e-6
    ev = s["trials"][0]["evaluation"]
    assert abs(ev["latency_ms"] - (0.01 * ev["macs"] / 1e6 + 0.02 * ev["layers"] + 0.3)) < 1e-6
    assert "predicted" in (tmp_path / "out" / "report.md").read_text()


def test_lowrank_stage_factorizes_the_pruned_student_and_the_lowered_file_is_it(data_and_teacher, tmp_path):
    from edgekd.api import compress
    from edgekd.config import CompressConfig

    npz, teacher = data_and_teacher
    cfg = CompressConfig(target="generic-cpu", out=tmp_path / "out", teacher=str(teacher), data=npz,
                         max_auc_drop=1.0, max_sensitivity_drop=1.0, max_samples=240)
    cfg.distill.student, cfg.distill.max_steps = "lcnet_050", 16
    cfg.prune.ratio, cfg.prune.depth, cfg.prune.steps, cfg.prune.recovery_steps = 0.0, 0, 1, 4
    cfg.quant.enabled = False
    cfg.bench.iterations = cfg.bench.max_iterations = 20
    cfg.bench.robust_images = 0
    cfg.lowrank.energy, cfg.lowrank.finetune_steps = 0.5, 4
    rep = compress(cfg, log=lambda m: None).report
    lr = rep["stages"]["lowrank"]
    assert lr["layers_factorized"] > 0 and lr["macs_after"] < lr["macs_before"]
    names = {c["name"]: c for c in rep["candidates"]}
    assert names["student-lowrank"]["macs"] == lr["macs_after"]
    assert names["student-fp32-onnxruntime"]["macs"] == lr["macs_after"]  # the exported file is the factorized model
    assert names["student-fp32-onnxruntime"]["agreement"]["ok"]
