"""The search: finds the known winner of a fake problem, refuses impossible budgets, resumes, Pareto, latency model."""
from __future__ import annotations

import itertools
import json
import math

import pytest

from edgekd.errors import InputError
from edgekd.search import (
    Budgets,
    Config,
    Evaluation,
    LatencyModel,
    LatencyPoint,
    SearchResult,
    SearchSpace,
    default_space,
    pareto_front,
    parse_duration,
    points_from_report,
    run_search,
)
from edgekd.report.search import markdown_table, plot_search, table_rows

SPACE = SearchSpace(students=("big", "small"), prune_depths=(0, 6), prune_ratios=(0.0, 0.5, 0.9),
                    lowrank_energies=(None, 0.8), precisions=("fp32", "int8"))
SMALL = SearchSpace(students=("big", "small"), prune_depths=(0, 6), prune_ratios=(0.0, 0.9), precisions=("fp32", "int8"))
FIDELITIES = [10, 30, 90]  # "distillation steps"
TEACHER = 0.95
BUDGETS = Budgets(max_metric_drop=0.01, teacher_metric=TEACHER)


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    """Optuna's journal fsyncs every write (5 ms each here, thousands per search): the logic under test
    does not depend on durability, which is Optuna's and the file system's."""
    import os

    monkeypatch.setattr(os, "fsync", lambda fd: None)


def latency(c: Config) -> float:
    ms = {"big": 1.0, "small": 0.55}[c.student]
    ms *= (1 - 0.6 * c.prune_ratio) * (1 - 0.04 * c.prune_depth) * (0.7 if c.precision == "int8" else 1.0)
    return ms * (0.93 if c.lowrank_energy else 1.0)


def final_metric(c: Config) -> float:
    """What full distillation reaches: pruning, low rank and INT8 cost accuracy, the small student starts lower."""
    return (0.957 - {"big": 0.0, "small": 0.004}[c.student] - 0.012 * c.prune_ratio ** 2 - 0.0011 * c.prune_depth
            - (0.0016 if c.precision == "int8" else 0.0) - (0.0023 if c.lowrank_energy else 0.0))


def fake(c: Config, fidelity: int) -> tuple[float, float, int, int]:
    """Deterministic (val metric, latency ms, size bytes, MACs): a short distillation is uniformly worse."""
    metric = final_metric(c) - 0.03 * (1 - fidelity / FIDELITIES[-1])
    return metric, latency(c), int(40_000 * (1 - c.prune_ratio)), int(1e7 * latency(c))


def known_winner(budgets: Budgets = BUDGETS, space: SearchSpace = SPACE) -> Config:
    configs = [Config(*v) for v in itertools.product(*(getattr(space, d) for d in space.DIMENSIONS))]
    inside = [c for c in configs if not budgets.violations(Evaluation.of(fake(c, FIDELITIES[-1])))]
    return min(inside, key=latency)


class Counting:
    """``fake`` that counts its calls, raises KeyboardInterrupt at call ``interrupt_at`` and fails on one student."""

    def __init__(self, interrupt_at: int | None = None, fail: str | None = None) -> None:
        self.calls: list[tuple[Config, int]] = []
        self.interrupt_at, self.fail = interrupt_at, fail

    def __call__(self, c: Config, fidelity: int):
        if self.interrupt_at is not None and len(self.calls) + 1 == self.interrupt_at:
            self.interrupted = c
            raise KeyboardInterrupt
        self.calls.append((c, fidelity))
        if self.fail and c.student == self.fail and c.prune_ratio == 0.9:
            raise RuntimeError("pruning could not reach the target\nsecond line")
        return fake(c, fidelity)


def search(tmp_path, evaluate, space: SearchSpace = SMALL, **kw):
    """The search on the small space (16 configurations) unless told otherwise; quiet."""
    args = {"fidelities": FIDELITIES, "folder": tmp_path / "search", "budget_s": 600.0, "budgets": BUDGETS,
            "seed": 0, "log": lambda msg: None}
    return run_search(evaluate, space, **{**args, **kw})


def test_finds_the_known_winner_and_prunes_on_the_way(tmp_path) -> None:
    winner = known_winner()
    assert winner == Config("small", 0, 0.9, None, "int8")  # the fake problem's answer (not a trap: look at it)
    ev = Counting()
    res = search(tmp_path, ev, space=SPACE)
    assert res.chosen is not None and res.chosen.config == winner, res.reason
    assert res.chosen.fidelity == FIDELITIES[-1] and not res.chosen.violations
    assert "fastest of" in res.reason and winner.label() in res.reason
    # successive halving: far fewer evaluations than every configuration at every fidelity
    assert len(ev.calls) < 0.6 * SPACE.size * len(FIDELITIES)
    states = {t.state for t in res.trials}
    assert {"complete", "pruned"} <= states
    assert len({t.config for t in res.trials}) == len(res.trials)  # one record per configuration
    assert all(t.fidelity == FIDELITIES[-1] for t in res.front)
    json.dumps(res.to_dict())


def test_a_bigger_metric_budget_picks_a_different_winner(tmp_path) -> None:
    loose = Budgets(max_metric_drop=0.03, teacher_metric=TEACHER, max_size_mb=0.02)
    res = search(tmp_path, Counting(), space=SPACE, budgets=loose)
    assert res.chosen is not None and res.chosen.config == known_winner(loose)


@pytest.mark.parametrize("budgets, words", [
    (Budgets(max_latency_ms=-1.0, max_metric_drop=None), "positive"),
    (Budgets(max_latency_ms=0.0, max_metric_drop=None), "positive"),
    (Budgets(max_latency_ms=1e-5, max_metric_drop=None), "below anything measurable"),
    (Budgets(max_latency_ms=math.nan, max_metric_drop=None), "positive"),
    (Budgets(max_size_mb=0.0, max_metric_drop=None), "positive"),
    (Budgets(max_metric_drop=-0.06, teacher_metric=0.95), "above the metric's maximum"),
    (Budgets(max_metric_drop=2.0, teacher_metric=0.95), "[-1, 1]"),
    (Budgets(max_metric_drop=0.01, teacher_metric=None), "teacher's val metric"),
])
def test_impossible_budgets_are_refused_in_one_line(tmp_path, budgets, words) -> None:
    ev = Counting()
    with pytest.raises(InputError) as e:
        search(tmp_path, ev, budgets=budgets)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert ev.calls == [] and not (tmp_path / "search").exists()  # refused before anything ran or was written


def test_no_configuration_inside_the_budget_says_which_and_the_closest(tmp_path) -> None:
    res = search(tmp_path, Counting(), budgets=Budgets(max_latency_ms=0.01, max_metric_drop=0.01, teacher_metric=TEACHER))
    assert res.chosen is None
    assert "none of" in res.reason and "latency by" in res.reason and "fastest was" in res.reason


def test_durations() -> None:
    assert parse_duration("30m") == 1800 and parse_duration("1h") == 3600 and parse_duration("900s") == 900
    assert parse_duration("1h30m") == 5400 and parse_duration(" 2.5m ") == 150
    for bad in ("30", "abc", "0m", "-5m", "30 minutes", "", "1h 2x"):
        with pytest.raises(InputError) as e:
            parse_duration(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="add a unit"):
        parse_duration("900")


def test_resume_after_an_interruption_reuses_every_finished_evaluation(tmp_path) -> None:
    first = Counting(interrupt_at=13)
    with pytest.raises(KeyboardInterrupt):
        search(tmp_path, first)
    assert len(first.calls) == 12
    second = Counting()
    res = search(tmp_path, second)
    assert not set(first.calls) & set(second.calls)  # nothing evaluated twice
    assert res.evaluations_reused >= 12 and res.evaluations_run == len(second.calls)
    assert res.chosen is not None and res.chosen.config == known_winner(space=SMALL)
    # the interrupted trial is the first one run again: its next evaluation is the first new call
    assert second.calls[0][0] == first.interrupted
    third = Counting()
    again = search(tmp_path, third)  # finished: everything is answered from the journal
    assert third.calls == [] and again.chosen.config == res.chosen.config


def test_time_budget_stops_and_a_resume_continues_with_the_rest(tmp_path) -> None:
    now = [0.0]

    class Timed(Counting):
        def __call__(self, c, fidelity):
            now[0] += fidelity  # an evaluation costs its fidelity in seconds
            return super().__call__(c, fidelity)

    short = Timed()
    res = search(tmp_path, short, budget_s=200.0, clock=lambda: now[0])
    assert res.stopped == "budget" and 200 <= res.seconds_total < 200 + FIDELITIES[-1]
    assert any(t.state == "stopped" for t in res.trials) or res.seconds_total >= 200
    more = Timed()
    res2 = search(tmp_path, more, budget_s=5000.0, clock=lambda: now[0])
    assert not set(short.calls) & set(more.calls)
    assert res2.seconds_total == pytest.approx(now[0]) and res2.chosen.config == known_winner(space=SMALL)
    spent = Timed()
    out = search(tmp_path, spent, budget_s=100.0, clock=lambda: now[0])  # this budget is already spent
    assert spent.calls == [] and out.stopped == "budget"


def test_failing_configurations_are_recorded_and_not_retried(tmp_path) -> None:
    ev = Counting(fail="big")
    res = search(tmp_path, ev)
    failed = [t for t in res.trials if t.state == "failed"]
    assert failed and all(t.config.student == "big" and t.config.prune_ratio == 0.9 for t in failed)
    assert all("pruning could not reach" in t.error and "\n" not in t.error for t in failed)
    assert res.chosen.config == known_winner(space=SMALL)
    again = Counting(fail="big")
    search(tmp_path, again)
    assert again.calls == []


def test_first_configurations_are_tried_first(tmp_path) -> None:
    hand = Config("big", 6, 0.9, None, "fp32")
    ev = Counting()
    search(tmp_path, ev, first=[hand], max_trials=4)
    assert ev.calls[0] == (hand, FIDELITIES[0])
    with pytest.raises(InputError, match="outside the search space"):
        search(tmp_path, ev, first=[Config("tiny", 0, 0.0, None, "fp32")])


def test_pareto_front_of_a_hand_made_set() -> None:
    pts = [(1.0, 0.90), (2.0, 0.95), (1.5, 0.92), (1.5, 0.91), (3.0, 0.94), (0.5, 0.80), (2.0, 0.95),
           (0.5, 0.79), (math.nan, 0.99), (4.0, 0.96)]
    assert pareto_front(pts) == [5, 0, 2, 1, 6, 9]
    assert pareto_front([]) == []


def test_latency_model_recovers_known_coefficients_and_labels_the_search() -> None:
    a, b, c = 0.02, 0.004, 0.05  # ms per MMAC, per layer, fixed
    pts = [LatencyPoint(int(m * 1e6), n, a * m + b * n + c, f"p{i}")
           for i, (m, n) in enumerate([(5, 20), (40, 30), (12, 60), (80, 50), (2, 10)])]
    model = LatencyModel.fit(pts, source="device.json")
    assert (model.ms_per_mmac, model.ms_per_layer, model.ms_fixed) == pytest.approx((a, b, c), rel=1e-6)
    assert model.rmse_ms < 1e-9 and model.predict(10e6, 25) == pytest.approx(a * 10 + b * 25 + c)
    noisy = LatencyModel.fit([(p.macs, p.layers, p.ms * (1.05 if i % 2 else 0.95)) for i, p in enumerate(pts)])
    assert noisy.max_rel_residual > 0.01 and noisy.ms_per_mmac >= 0 and noisy.ms_per_layer >= 0
    assert "least squares on 5 measured points" in noisy.text() and "RMS residual" in noisy.text()
    with pytest.raises(InputError, match="at least 3"):
        LatencyModel.fit(pts[:2])
    # negative slopes are not physical: a fit that would want one sets it to zero
    flat = LatencyModel.fit([(1e6, 10, 1.0), (2e6, 10, 0.9), (3e6, 10, 0.8), (4e6, 10, 0.7)])
    assert flat.ms_per_mmac == 0.0 and flat.ms_fixed + 10 * flat.ms_per_layer == pytest.approx(0.85)


def test_points_from_a_merged_report() -> None:
    report = {"candidates": [{"name": "s-fp16", "macs": 12_000_000, "layers": 40}, {"name": "s2", "macs": 5_000_000}],
              "device_measurements": [{"candidate": "s-fp16", "latency_ms": {"p50": 1.5}},
                                      {"candidate": "s2", "latency_ms": {"p50": 0.9}}]}
    with pytest.raises(InputError, match="layer count for 's2'"):
        points_from_report(report)
    pts = points_from_report(report, layers={"s2": 22})
    assert [(p.macs, p.layers, p.ms) for p in pts] == [(12_000_000, 40, 1.5), (5_000_000, 22, 0.9)]


def test_predicted_latency_ranks_by_the_model_and_says_so(tmp_path) -> None:
    model = LatencyModel(0.0, 0.01, 0.1)  # only layers count: deeper pruning wins

    def evaluate(c, f):
        metric, _, size, macs = fake(c, f)
        return Evaluation(metric, math.nan, size, macs, layers=60 - 5 * c.prune_depth)

    res = search(tmp_path, evaluate, latency_model=model)
    assert res.latency_kind == "predicted" and res.chosen.config.prune_depth == 6
    assert res.chosen.evaluation.latency_ms == pytest.approx(0.1 + 0.01 * 30)
    assert "predicted" in res.reason and "PREDICTED" not in res.reason
    assert "**predicted**" in markdown_table(res)


def test_report_table_and_plot(tmp_path) -> None:
    res = search(tmp_path, Counting())
    rows = table_rows(res)
    assert rows[0][9] == "latency ms (measured)" and len(rows) == len(res.trials) + 1
    assert all(len(r) == len(rows[0]) for r in rows)
    shipped = [r for r in rows if r[-1] == "shipped"]
    assert len(shipped) == 1 and shipped[0][0] == str(res.chosen.number)
    full = [r for r in rows[1:] if r[6] == "complete"]
    assert rows[1:len(full) + 1] == full and [float(r[9]) for r in full] == sorted(float(r[9]) for r in full)
    assert sum(r[-1] in ("front", "shipped") for r in rows) >= len(res.front)
    md = markdown_table(res)
    assert md.count("\n|") >= len(res.trials) and res.reason in md
    png = plot_search(res, tmp_path / "search.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the report draws it again from report.json alone: the same table after a JSON round trip
    back = SearchResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert table_rows(back) == rows and markdown_table(back) == md


def test_default_space_follows_the_profile() -> None:
    from edgekd.targets import load_target

    p = load_target("generic-cpu")
    s = default_space(p)
    assert s.students == ("from-teacher", p.default_student) and s.precisions == tuple(p.precisions)
    assert s.lowrank_energies == (None,) and default_space(p, lowrank=True).lowrank_energies[0] is None
    s.check()
    with pytest.raises(InputError, match="prune ratio"):
        SearchSpace(prune_ratios=(0.0, 0.99)).check()


def test_a_configuration_as_compress_settings() -> None:
    from edgekd.config import CompressConfig
    from edgekd.search.adapt import compress_config

    base = CompressConfig()
    cfg, energy = compress_config(base, Config("lcnet_100", 6, 0.9, 0.8, "fp32"), 300)
    assert (cfg.distill.student, cfg.distill.max_steps, cfg.prune.depth, cfg.prune.ratio) == ("lcnet_100", 300, 6, 0.9)
    assert cfg.quant.enabled is False and energy == 0.8 and base.prune.ratio is None  # the base is not changed
    assert compress_config(base, Config("from-teacher", None, 0.0, None, "int8"), 10)[0].quant.enabled


def test_a_trial_left_running_by_a_killed_process_is_run_again(tmp_path) -> None:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    res = search(tmp_path, Counting(), max_trials=3)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "search" / "study.journal")))
    study = optuna.load_study(study_name=res.study_name, storage=storage)
    done = {t.config for t in res.trials}
    left = next(c for c in (Config("big", d, r, None, p) for d in (0, 6) for r in (0.0, 0.9) for p in ("fp32", "int8"))
                if c not in done)
    study.enqueue_trial(left.to_dict())
    trial = study.ask()  # as a process does just before it is killed: params drawn, state RUNNING
    assert SMALL.suggest(trial) == left
    ev = Counting()
    again = search(tmp_path, ev, max_trials=5)
    assert ev.calls[0] == (left, FIDELITIES[0])
    assert left in {t.config for t in again.trials if t.state != "stopped"}

