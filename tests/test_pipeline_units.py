"""The shipping rule and the output folder's all-or-nothing publication."""
from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from edgekd.errors import InputError, NotShippedError
from edgekd.measure.candidates import Candidate
from edgekd.ship import choose_shipped
from edgekd.stagecache import staging
from edgekd.targets import load_target


def cand(name, backend, precision, auc, p50, role="student"):
    """Same AUC on val (where the choice is made) and test (where it is confirmed); no sensitivity budget."""
    c = Candidate(name, "lower", backend, precision, role, runner=None)
    c.metrics = NS(auc=auc, val_auc=auc, sensitivity=None, val_sensitivity=None)
    c.latency = NS(p50=p50)
    return c


TEACHER = NS(auc=0.95, val_auc=0.95, sensitivity=None, val_sensitivity=None)


@pytest.fixture
def ov():
    return load_target("intel-cpu")


def test_ships_the_fastest_candidate_inside_the_budget(ov):
    cands = [
        cand("teacher", "openvino", "int8", 0.95, 0.5, role="baseline"),
        cand("slow-ok", "openvino", "fp32", 0.949, 0.30),
        cand("fast-ok", "openvino", "int8", 0.941, 0.20),
        cand("fastest-but-worse", "openvino", "int8", 0.90, 0.10),
        cand("other-runtime", "onnxruntime", "fp32", 0.95, 0.05),
    ]
    shipped, info = choose_shipped(cands, ov, TEACHER, max_drop=0.01)
    assert shipped.name == "fast-ok"
    assert info["eligible"] == ["slow-ok", "fast-ok"]
    assert "other-runtime" not in info["deployable"] and "teacher" not in info["deployable"]


def test_the_budget_edge_is_inclusive(ov):
    shipped, _ = choose_shipped([cand("edge", "openvino", "fp32", 0.94, 1.0)], ov, TEACHER, max_drop=0.01)
    assert shipped is not None


def test_nothing_qualifies_gives_none_and_says_why(ov):
    shipped, info = choose_shipped([cand("bad", "openvino", "fp32", 0.80, 0.1)], ov, TEACHER, max_drop=0.01)
    assert shipped is None
    assert "no openvino candidate reached val AUC 0.9400" in info["reason"] and "best was bad at 0.8000" in info["reason"]


def test_precisions_the_target_does_not_allow_are_not_shipped(ov):
    fp16 = cand("half", "openvino", "fp16", 0.95, 0.01)
    shipped, _ = choose_shipped([fp16], ov, TEACHER, max_drop=0.01)
    assert shipped is None


def test_staging_publishes_on_success(tmp_path):
    out = tmp_path / "out"
    with staging(out, overwrite=False) as work:
        (work / "report.json").write_text("{}")
        assert not out.exists()
    assert (out / "report.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_staging_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staging(out, overwrite=False) as work:
            (work / "half.onnx").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_staging_keeps_the_evidence_when_nothing_ships(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(NotShippedError):
        with staging(out, overwrite=False) as work:
            (work / "report.json").write_text("{}")
            raise NotShippedError("nothing shipped")
    assert (out / "report.json").exists()


def test_overwrite_replaces_and_refusal_keeps(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(InputError, match="--overwrite"):
        with staging(out, overwrite=False):
            pass
    assert (out / "old.txt").exists()
    with staging(out, overwrite=True) as work:
        (work / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
