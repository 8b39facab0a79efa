"""The torch reference runner: the model as trained, in eager mode on the CPU.

Its logits are what every exported model is checked against, and its latency is the
"before" column of the report.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ._base import as_batch, check_precision, check_threads

PRECISIONS = ("fp32", "bf16", "int8")


class TorchRunner:
    """Runs an ``nn.Module`` under ``no_grad`` in eval mode with a fixed torch thread count.

    ``precision`` records what the module computes: "fp32" for a float model, "int8" for an
    NNCF fake-quantized one (the module itself decides the arithmetic), and "bf16" runs the
    float model under CPU autocast to bfloat16. The thread count is applied for each call and
    restored afterwards; :meth:`pinned` holds it over a whole block (used while timing, so the
    switch is not inside the measured calls).
    """

    backend = "torch"

    def __init__(self, module: torch.nn.Module, threads: int, precision: str = "fp32") -> None:
        self.module = module.eval()
        self.threads = check_threads(threads)
        self.precision = check_precision(precision, PRECISIONS, self.backend)
        self.path: Path | None = None
        self.config = {"threads": self.threads, "autocast": "bfloat16" if precision == "bf16" else None}

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """Use ``self.threads`` torch threads inside the block, then restore the previous count."""
        previous = torch.get_num_threads()
        if previous != self.threads:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            if previous != self.threads:
                torch.set_num_threads(previous)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(as_batch(x))
        with self.pinned(), torch.no_grad():
            if self.precision == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out = self.module(batch)
            else:
                out = self.module(batch)
        return out.float().numpy()


def open_runner(source: torch.nn.Module, *, threads: int, precision: str = "fp32") -> TorchRunner:
    """Uniform backend entry point (see :func:`edgekd.lower.get_backend`)."""
    return TorchRunner(source, threads, precision)
