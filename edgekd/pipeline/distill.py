"""The distill stage: the student (the teacher's own network cut down, or a zoo student) taught by the teacher."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from .._io import sha256_file
from ..measure.candidates import Candidate, state_dict_bytes
from .run import Run, state_of
from .stage import Stage


RESOLVED = ("student", "max_steps", "teacher_mode", "cached_views")  # DistillConfig fields keyed by what they resolve to


class DistillStage(Stage):
    """Knowledge distillation of the chosen student (``inp.student``) for the run's step budget."""

    name = "distill"
    ranks = "collective"  # every process trains (torchrun: edgekd._dist)

    def announce(self, run: Run) -> str:
        cfg = run.cfg.distill
        return (f"{run.inp.student}: {run.budget.distill} steps of {run.budget.batch_size} ({run.signal.mode} teacher, "
                f"T={cfg.temperature}, alpha={cfg.alpha})")

    def key(self, run: Run) -> str:
        cfg, weights = run.cfg, run.cfg.distill.student_weights
        # the student, steps, teacher mode and view count are in the key as resolved (inp.student, the budget,
        # the teacher-signal key), not as typed: `--search` and a plain run of the same settings share the entry
        settings = {k: v for k, v in asdict(cfg.distill).items() if k not in RESOLVED}
        return run.store.key(self.name, run.keys["teacher-signal"], run.inp.student, settings,
                             sha256_file(Path(weights)) if weights is not None else None, run.budget.distill, cfg.seed,
                             *run.device_key())

    def summary(self, run: Run) -> str:
        return run.inp.student

    def produce(self, run: Run, folder: Path) -> dict:
        from .._device import for_training, to_cpu
        from ..distill import distill
        from ..prune.derived import (
            FROM_TEACHER,
            REFERENCE_STUDENT,
            derive_student,
            reference_macs,
            save_derived,
        )

        cfg, inp, name, tl = run.cfg, run.inp, run.inp.student, run.signal
        info: dict = {"student": name}
        derived = name == FROM_TEACHER
        if derived:  # the teacher's own architecture and weights, cut to the profile student's MACs
            ref = inp.profile.default_student if inp.profile.default_student != FROM_TEACHER else REFERENCE_STUDENT
            run.log(f"student: the teacher's own network, cut to the MACs of {ref} (blocks, then channels)")
            ds = derive_student(inp.teacher, example=inp.example, val_images=inp.data.val.images,
                                val_teacher_logits=tl.val, train_images=inp.data.train.images,
                                macs=reference_macs(inp.example, inp.data.num_classes, ref),
                                temperature=cfg.distill.temperature, base=run.build_student(name))
            start, loaded = ds.model, None
            if not ds.record["macs_target_reached"]:
                run.log(f"student: the teacher's network is down to its last channels at {ds.record['macs'] / 1e6:.2f} M "
                        f"MACs, above {ref}'s {ds.record['macs_target'] / 1e6:.2f} M; it starts from there")
            info.update(start="derived from the teacher", derived={**ds.record, "macs_reference": ref})
        else:
            start, loaded = run.starting_student(name)
            info.update(start="weights" if loaded else "random init", student_weights=loaded)
        steps = run.budget.distill
        res = distill(for_training(start, run.device), inp.data, tl, cfg.distill, steps=steps, seed=cfg.seed,
                      features=True)
        to_cpu(res.model)  # saved, exported and measured from the CPU
        if derived:
            save_derived(res.model, inp.teacher, folder, inp.example, run.build_student(name))  # structure + weights
        else:
            torch.save(state_of(res.model), folder / "student.pt")
        return {**info, "device": str(run.device), "steps_planned": steps, "steps_run": res.steps_run,
                "best_step": res.best_step, f"best_val_{res.metric}": res.best_val_score, "val_kl": res.val_kl,
                "history": res.history}

    def load(self, run: Run, entry) -> None:
        from ..lower.torch import TorchRunner
        from ..models import count_macs, count_params
        from ..prune.derived import FROM_TEACHER, load_derived

        inp, name = run.inp, run.inp.student
        if name == FROM_TEACHER:
            model = load_derived(inp.teacher, entry.path, inp.example, run.build_student(name))
        else:
            model = run.build_student(name)
            model.load_state_dict(torch.load(entry.file("student.pt"), map_location="cpu", weights_only=True))
        model.eval()
        run.copy_in(entry, "models/distilled")
        run.stages["distill"] = dict(entry.info)
        c = Candidate("student-distilled", "distill", "torch", "fp32", "student", TorchRunner(model, inp.threads),
                      None, state_dict_bytes(model), count_params(model), count_macs(model, inp.example))
        run.candidates.append(c)
        run.student, run.student_candidate, run.student_key = model, c, run.keys[self.name]
