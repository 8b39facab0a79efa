"""A candidate is one model the pipeline could ship: where it came from, how it runs, what it scores."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import BenchConfig
from ..metrics.classification import Metrics, evaluate_logits
from .latency import latency_report


@dataclass
class Candidate:
    name: str  # unique, e.g. "student-int8-openvino"
    stage: str  # teacher | distill | prune | quantize | lower
    backend: str  # torch | onnxruntime | openvino | tensorrt
    precision: str  # fp32 | int8 | fp16 | bf16
    role: str  # "baseline" (the teacher, what a user would otherwise deploy) or "student"
    runner: Any  # edgekd.lower._base.Runner
    path: Path | None = None
    size_bytes: int | None = None
    params: int | None = None
    macs: int | None = None
    agreement: Any = None  # edgekd.lower.validate.Agreement, for lowered models
    source: str | None = None  # name of the candidate this one was lowered from
    metrics: Metrics | None = None  # classification Metrics; segmentation edgekd.tasks.segmentation.SegScores
    latency: Any = None  # edgekd.measure.latency.Latency, batch 1
    latency_batch: Any = None  # the same at the target profile's batch (None when that is 1)
    memory: Any = None  # edgekd.measure.memory.SessionMemory (ONNX Runtime / OpenVINO sessions)
    robustness: dict | None = None  # {"val", "test"}: edgekd.robust.Robustness under acquisition shift, when evaluated
    notes: list[str] = field(default_factory=list)
    timed: bool = True  # False for simulated models (NNCF fake-quant in torch): metrics only, no latency
    layers: int | None = None  # convolutions + linears of the lowered model (the search's latency model term)

    def to_dict(self, out: Path | None = None) -> dict:
        path = self.path
        if path is not None and out is not None:
            try:
                path = path.resolve().relative_to(out.resolve())
            except ValueError:
                pass
        d = {
            "name": self.name,
            "stage": self.stage,
            "backend": self.backend,
            "precision": self.precision,
            "role": self.role,
            "source": self.source,
            "path": str(path) if path is not None else None,
            "size_bytes": self.size_bytes,
            "params": self.params,
            "macs": self.macs,
            "layers": self.layers,
            "latency_ms": latency_report(self.latency, self.latency_batch),
            "memory_mb": self.memory.to_dict() if self.memory is not None else None,
            "metrics": self.metrics.to_dict() if self.metrics else None,
            "agreement": None,
            "runtime_config": getattr(self.runner, "config", None) or None,
            "notes": self.notes,
        }
        if self.agreement is not None:
            a = self.agreement
            d["agreement"] = {
                "source": self.source, "agreement": a.agreement, "max_abs_diff": a.max_abs_diff, "n": a.n,
                "min_agreement": a.min_agreement, "max_abs_diff_allowed": a.max_abs_diff_allowed, "ok": a.ok,
            }
        return d


def state_dict_bytes(module: torch.nn.Module) -> int:
    """Size of the module's weights as torch.save would write them."""
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.tell()


def measure(
    cand: Candidate,
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    cfg: BenchConfig,
    threads: int,
    *,
    batch: int = 1,
    logits_cache: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    reference: Metrics | None = None,
    seed: int = 0,
    evaluate: Any = None,
) -> None:
    """Fill in the candidate's clinical metrics (threshold from val, figures on test), latency at
    batch 1 and at ``batch`` (when > 1), and its session's peak memory.

    ``reference`` is the teacher's metrics (None while measuring the teacher itself): with
    ``cfg.operating_point == "teacher-sensitivity"`` this candidate's val threshold is the one
    reaching the teacher's val sensitivity (see edgekd.metrics.classification).
    ``evaluate(cand, val_logits, test_logits)``: the task's metrics instead (segmentation: Dice,
    IoU, HD95; :meth:`edgekd.tasks.Task.evaluate`).
    """
    from ..lower._base import predict_batched

    if logits_cache is not None and cand.name in logits_cache:
        val_logits, test_logits = logits_cache[cand.name]
    else:
        val_logits = predict_batched(cand.runner, val[0])
        test_logits = predict_batched(cand.runner, test[0])
        if logits_cache is not None:
            logits_cache[cand.name] = (val_logits, test_logits)
    if evaluate is not None:
        cand.metrics = evaluate(cand, val_logits, test_logits)
    else:
        target = reference.val_sensitivity if reference is not None and reference is not cand.metrics else None
        cand.metrics = evaluate_logits(test_logits, test[1], val_logits, val[1], operating_point=cfg.operating_point,
                                       target_sensitivity=target, resamples=cfg.bootstrap_resamples, seed=seed)
    if not cand.timed:
        return
    from .latency import time_candidate

    time_candidate(cand, test[0], cfg, threads, batch)
