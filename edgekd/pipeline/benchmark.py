"""The benchmark stage: every candidate measured in this run, the shipped one chosen, the report and the bundle written.

Never cached: every figure in a report is measured in the run that writes it.
"""
from __future__ import annotations

import numpy as np

from .run import Run
from .stage import Stage


class BenchmarkStage(Stage):
    """Latency, size and clinical figures of every candidate; the shipping decision; report and bundle."""

    name = "benchmark"

    def announce(self, run: Run) -> str:
        return f"{len(run.candidates)} candidates (batch 1, {run.inp.threads} threads), then ship and report"

    def execute(self, run: Run) -> None:
        from ..measure.candidates import measure
        from ..report.build import build_report
        from ..report.html import write_html
        from ..report.writer import write_report
        from ..ship import teacher_reference

        cfg, inp, cands = run.cfg, run.inp, run.candidates
        data, profile, task = inp.data, inp.profile, inp.task
        val, test = _arrays(data.val, task), _arrays(data.test, task)
        teacher = teacher_reference(cands)
        batch = cfg.bench.batch or profile.batch

        rule = task.decision_rule(data, cfg, run.log)

        def evaluate(reference):
            return lambda c, val_logits, test_logits: task.evaluate(c, val_logits, val[1], test_logits, test[1], cfg,
                                                                    reference, data.num_classes, cfg.seed, rule)

        measure(teacher, val, test, cfg.bench, inp.threads, reference=None, seed=cfg.seed, batch=batch,
                evaluate=evaluate(None))
        for c in cands:
            if c is not teacher:
                measure(c, val, test, cfg.bench, inp.threads, reference=teacher.metrics, seed=cfg.seed, batch=batch,
                        evaluate=evaluate(teacher.metrics))
        budget = task.budget(profile, cfg)
        robust = None
        if cfg.bench.robust_images > 0 and task.robustness:
            from ..robust.candidates import evaluate_candidates

            # val only where a robustness budget chooses on it; the reported figures are test's
            splits = {"val": val, "test": test} if budget.max_robust_drop is not None else {"test": test}
            pre = data.preprocessing
            robust = evaluate_candidates(teacher, cands, profile, splits, mean=pre.mean,
                                         std=pre.std, seed=cfg.seed, max_images=cfg.bench.robust_images,
                                         metric=task.robust_metric, num_classes=data.num_classes, log=run.log)
        shipped, ship_info = task.choose(cands, profile, teacher.metrics, budget)
        ship_info["budget_source"] = {k: v for k, v in budget.source.items() if k in task.budgets}
        ship_info["teacher_candidate"] = teacher.name
        report = build_report(cfg, inp, cands, shipped, ship_info, run.stages, run.work, run.elapsed(), robust=robust,
                              search=run.search)
        bundle = None
        if shipped is not None:
            from ..bundle import bundle_entry, write_bundle

            shipped_d = next(c for c in report["candidates"] if c["name"] == shipped.name)
            bundle = write_bundle(run.work, shipped_d, data, profile, cfg.seed, task)
            report["bundle"] = bundle_entry(bundle, archive=cfg.archive)
        write_report(report, run.work)
        write_html(report, run.work, data)
        if bundle is not None:
            from ..bundle import finish_bundle

            finish_bundle(bundle, report)
        run.shipped, run.report, run.ship_info = shipped, report, ship_info


def _arrays(split, task) -> tuple[np.ndarray, np.ndarray]:
    """(images, targets: labels or masks) of one split, as numpy."""
    return split.images.numpy().astype(np.float32, copy=False), task.targets(split)
