"""The quantize stage: NNCF post-training INT8 of the fp32 student, then quantization-aware fine-tuning with the KD loss."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from ..errors import EdgekdError
from ..measure.candidates import Candidate
from .run import Run, state_of
from .stage import Stage

SIMULATED = "NNCF fake-quantized torch model (simulated INT8): accuracy only; latency is measured on the lowered INT8 files"


class QuantizeStage(Stage):
    """PTQ on calibration images from train, then ``budget.qat`` QAT steps; a student NNCF cannot trace
    skips INT8 with one line and the fp32 candidates remain."""

    name = "quantize"
    ranks = "collective"  # every process trains (torchrun: edgekd._dist)

    def skip(self, run: Run) -> str | None:
        if not run.cfg.quant.enabled:
            return "--no-quantize"
        if "int8" not in run.inp.profile.precisions:
            return f"target {run.inp.profile.name} allows no int8"
        return None

    def _calibration(self, run: Run) -> torch.Tensor:
        """The seeded calibration images from train, drawn once per run (the stage object is the run's)."""
        if getattr(self, "_calib", None) is None:
            from ..quantize import calibration_subset

            self._calib = calibration_subset(run.inp.data.train, run.cfg.quant.calibration_samples, run.cfg.seed)
        return self._calib

    def announce(self, run: Run) -> str:
        return (f"NNCF post-training INT8 ({len(self._calibration(run))} images), "
                f"then {run.budget.qat} QAT steps")

    def summary(self, run: Run) -> str:
        return "PTQ + QAT"

    def key(self, run: Run) -> str:
        return run.store.key(self.name, run.student_key, asdict(run.cfg.quant), run.budget.qat, run.cfg.seed,
                             *(run.device_key() if run.budget.qat > 0 else ()))  # PTQ runs on the CPU

    def execute(self, run: Run) -> None:
        from ..quantize._nncf_ext import prepare_nncf

        prepare_nncf(run.log)  # build its C++ extension once, with a timeout a busy machine can meet
        super().execute(run)

    def produce(self, run: Run, folder: Path) -> dict:
        from .._device import for_training, to_cpu
        from ..quantize import quantize_ptq, quantize_qat

        cfg, calib, qat_steps = run.cfg, self._calibration(run), run.budget.qat
        try:
            ptq = quantize_ptq(run.student, calib)
        except EdgekdError:
            raise
        except Exception as exc:  # noqa: BLE001 - NNCF cannot trace this student: INT8 is skipped, fp32 still ships
            reason = f"NNCF could not quantize this student ({type(exc).__name__}: {str(exc)[:120]})"
            return {"skipped": reason, "calibration_samples": len(calib), "qat_steps": 0}
        info: dict = {"calibration_samples": len(calib), "qat_steps": qat_steps}
        probe = calib[:8]
        _save_quantized(ptq, probe, folder / "ptq.pt")  # PTQ (calibration) on the CPU
        if qat_steps > 0:
            info["device"] = str(run.device)
            res = quantize_qat(for_training(ptq, run.device), run.inp.data, run.signal, cfg.quant, cfg.distill,
                               steps=qat_steps, seed=cfg.seed)  # trains ptq in place
            _save_quantized(to_cpu(res.model), probe, folder / "qat.pt")
            info.update({f"best_val_{res.metric}": res.best_val_score}, best_step=res.best_step, steps_run=res.steps_run,
                        history=res.history)
        return info

    def load(self, run: Run, entry) -> None:
        from ..lower.torch import TorchRunner
        from ..quantize._nncf_ext import nncf_kernels

        run.copy_in(entry, "models/quantized")
        run.stages["quantize"] = dict(entry.info, nncf_kernels=nncf_kernels())
        if entry.info.get("skipped"):
            run.log(f"INT8 skipped: {entry.info['skipped']}; the fp32 candidates remain (a zoo student, --student "
                    f"{run.inp.profile.default_student}, quantizes)")
            return
        calib, fp32 = self._calibration(run), run.student_candidate
        models = [("student-int8-ptq", _rebuild(run.student, calib, entry.file("ptq.pt")))]
        if entry.file("qat.pt").exists():
            models.append(("student-int8-qat", _rebuild(run.student, calib, entry.file("qat.pt"))))
        cands = [Candidate(n, "quantize", "torch", "int8", "student", TorchRunner(m, run.inp.threads), None, None,
                           fp32.params, fp32.macs, timed=False, notes=[SIMULATED]) for n, m in models]
        run.candidates += cands
        run.quantized, run.quantized_candidate = models[-1][1], cands[-1]


def _rebuild(model: torch.nn.Module, calib: torch.Tensor, path: Path) -> torch.nn.Module:
    """The INT8 model saved at ``path``, rebuilt on ``model`` and checked against its saved outputs.

    NNCF's quantizer placement does not depend on the statistics: PTQ on one image rebuilds the
    structure in a second, then the saved state (scales, weights) replaces everything it computed.
    """
    from ..quantize import quantize_ptq

    saved = torch.load(path, map_location="cpu", weights_only=True)
    q = quantize_ptq(model, calib[:1])
    q.load_state_dict(saved["state"])
    q.eval()
    with torch.no_grad():
        # same weights and scales: equal up to float summation order (thread counts may differ)
        if not torch.allclose(q(calib[:8]), saved["probe_logits"], rtol=1e-4, atol=1e-4):
            raise RuntimeError(f"internal: the INT8 model rebuilt from {path} does not reproduce "
                               "its saved outputs; re-run with --force")
    return q


def _save_quantized(model: torch.nn.Module, probe: torch.Tensor, path: Path) -> None:
    """The quantized model's state and its logits on a few images (checked when it is rebuilt)."""
    model.eval()
    with torch.no_grad():
        logits = model(probe).detach().clone()
    torch.save({"state": state_of(model), "probe_logits": logits}, path)
