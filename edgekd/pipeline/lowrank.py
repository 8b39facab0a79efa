"""The low-rank stage: convolutions and linears split in two by truncated SVD, then fine-tuned by distillation.

Off unless an energy is set (``CompressConfig.lowrank.energy``; the search sets it when its space
holds low rank). Measured not to win on the students of the CPU targets (benchmarks/README.md,
``lowrank.py``), so no default run factorizes.
"""
from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path

from ..measure.candidates import Candidate, state_dict_bytes
from .run import Run
from .stage import Stage


class LowRankStage(Stage):
    """Truncated-SVD factorization of the pruned student at the configured energy (edgekd.lowrank)."""

    name = "lowrank"
    ranks = "collective"  # every process trains (torchrun: edgekd._dist)

    def skip(self, run: Run) -> str | None:
        return None if run.cfg.lowrank.energy is not None else "no low-rank energy set"

    def announce(self, run: Run) -> str:
        return f"truncated SVD keeping {run.cfg.lowrank.energy:g} of each layer's energy, then {self._steps(run)} steps"

    def _steps(self, run: Run) -> int:
        s = run.cfg.lowrank.finetune_steps
        return int(s) if s is not None else run.budget.recovery

    def key(self, run: Run) -> str:
        return run.store.key(self.name, run.student_key, asdict(run.cfg.lowrank), self._steps(run), run.cfg.seed)

    def produce(self, run: Run, folder: Path) -> dict:
        from ..distill import distill
        from ..lowrank import LowRankConfig, factorize, save_lowrank

        cfg, inp = run.cfg, run.inp
        head = inp.task.objective.head_name(run.student)
        res = factorize(run.student, inp.example, LowRankConfig(energy=float(cfg.lowrank.energy), exclude=(head,)))
        model, info = res.model, {k: v for k, v in res.record.items() if k not in ("layers", "skipped")}
        info["layers_factorized"] = len(res.record["layers"])
        steps = self._steps(run)
        if steps > 0 and res.record["layers"]:
            tuned = distill(model, inp.data, run.signal, cfg.distill, steps=steps, seed=cfg.seed + 101,
                            desc="low-rank fine-tune", keep_start=True)
            model = tuned.model
            info.update(steps_run=tuned.steps_run, best_step=tuned.best_step,
                        **{f"best_val_{tuned.metric}": tuned.best_val_score})
        save_lowrank(model, res.record, folder)
        return info

    def load(self, run: Run, entry) -> None:
        from ..lower.torch import TorchRunner
        from ..lowrank import load_lowrank
        from ..models import count_params

        source = run.student
        model = load_lowrank(lambda: copy.deepcopy(source), entry.path)
        run.copy_in(entry, "models/lowrank")
        run.stages["lowrank"] = info = dict(entry.info)
        c = Candidate("student-lowrank", "lowrank", "torch", "fp32", "student", TorchRunner(model, run.inp.threads),
                      None, state_dict_bytes(model), count_params(model), info["macs_after"])
        run.candidates.append(c)
        run.student, run.student_candidate, run.student_key = model, c, run.keys[self.name]
