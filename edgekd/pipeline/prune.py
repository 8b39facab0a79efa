"""The prune stage: whole blocks, then channels, removed with Torch-Pruning, each step fine-tuned by distillation."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..measure.candidates import Candidate, state_dict_bytes
from .run import Run
from .stage import Stage


class PruneStage(Stage):
    """Structured pruning of the distilled student toward a MACs ratio (``--prune-*``)."""

    name = "prune"
    ranks = "collective"  # every process trains (torchrun: edgekd._dist)

    def skip(self, run: Run) -> str | None:
        p = run.cfg.prune
        return "--prune-ratio 0, --prune-depth 0" if p.ratio <= 0 and p.depth == 0 else None

    def announce(self, run: Run) -> str:
        return self.summary(run) + " (Torch-Pruning DepGraph)"

    def summary(self, run: Run) -> str:
        p = run.cfg.prune
        parts = (["half of the removable blocks" if p.depth is None else f"{p.depth} whole blocks"]
                 if p.depth != 0 else []) + ([f"{p.ratio:.0%} of MACs in {p.steps} steps"] if p.ratio > 0 else [])
        return ", then ".join(parts)

    def key(self, run: Run) -> str:
        b = run.budget
        return run.store.key(self.name, run.student_key, asdict(run.cfg.prune), b.finetune, b.recovery,
                             *run.device_key())

    def _base(self, run: Run):
        return run.build_student(run.stages["distill"]["student"])  # what the saved structure is relative to

    def produce(self, run: Run, folder: Path) -> dict:
        from .._device import for_training, to_cpu
        from ..prune import prune
        from ..prune.pruner import unreached_text
        from ..prune.serialize import save_pruned

        cfg, b = run.cfg, run.budget
        # on another device: a copy (run.student stays the CPU candidate the benchmark measures)
        student = for_training(run.student, run.device, copy_first=True)
        res = prune(student, run.inp.data, run.signal, cfg.prune, cfg.distill, finetune_steps=b.finetune,
                    recovery_steps=b.recovery, seed=cfg.seed)
        short = unreached_text(res.steps, cfg.prune.ratio)
        if short:
            run.log(short)
        save_pruned(to_cpu(res.model), self._base(run), folder)
        return {"device": str(run.device), "macs_before": res.macs_before, "macs_after": res.macs_after,
                "params_before": res.params_before, "params_after": res.params_after, "steps": res.steps}

    def load(self, run: Run, entry) -> None:
        from ..lower.torch import TorchRunner
        from ..prune.serialize import load_pruned

        pruned = load_pruned(lambda: self._base(run), entry.path)
        run.copy_in(entry, "models/pruned")
        run.stages["prune"] = info = dict(entry.info)
        c = Candidate("student-pruned", "prune", "torch", "fp32", "student", TorchRunner(pruned, run.inp.threads), None,
                      state_dict_bytes(pruned), info["params_after"], info["macs_after"])
        run.candidates.append(c)
        run.student, run.student_candidate, run.student_key = pruned, c, run.keys[self.name]
