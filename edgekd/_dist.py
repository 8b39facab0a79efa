"""Several training processes (``torchrun``): one place that knows the process group.

``torchrun --nproc-per-node N -m edgekd compress …`` starts N copies of the same command; each
finds its rank in the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``). edgekd then joins them into one process group (gloo on the CPU,
NCCL when each process trains on its own GPU) and splits the work like this:

* the **training stages** (distill, the prune fine-tunes, low rank, QAT) run in every process under
  :class:`~torch.nn.parallel.DistributedDataParallel`: each optimizer step's batch is drawn as in a
  single process (the same seeded order, the same global batch size, so the same hyper-parameters
  hold) and split between the processes (:func:`shard`, what a ``DistributedSampler`` does over that
  order); DDP averages the gradients, weighted so that the step is the mean over the whole batch.
  Rank 0 alone scores val and tells the others (:func:`share`), so that every process keeps the
  same checkpoint and stops at the same step;
* **rank 0 alone** evaluates the teacher, writes the stage cache, lowers, measures, ships and
  writes ``--out``; the other processes read the teacher's answers from the stage cache it wrote,
  and stop after the last training stage (so the stage cache and ``--out`` must be on one
  filesystem that every machine sees when ``--nnodes`` is above 1);
* a process that dies ends the run: torchrun stops the others, each exits non-zero, and ``--out``
  is not written (the staging folder is removed on SIGTERM as on an error).

With one process (plain ``edgekd compress``) nothing here does anything.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from .errors import InputError

TIMEOUT_ENV = "EDGEKD_DIST_TIMEOUT_MIN"  # how long a process waits for the others (rank 0's evaluation, lowering)
DEFAULT_TIMEOUT_MIN = 120


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None  # "gloo" | "nccl" once joined; None: one process

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def describe(self) -> dict:
        return {"processes": self.size, "backend": self.backend}


ONE = World()
_world = ONE


def from_env(env: dict[str, str] | None = None) -> World:
    """The rank and size torchrun set (one process when it set none); one line when they make no sense."""
    env = os.environ if env is None else env
    try:
        size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise InputError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (they are set by torchrun): start "
                         "the run with `torchrun --nproc-per-node N -m edgekd compress ...`") from None
    if size < 1 or not 0 <= rank < size or local < 0:
        raise InputError(f"RANK={rank} WORLD_SIZE={size} LOCAL_RANK={local} do not describe a process group: start "
                         "the run with `torchrun --nproc-per-node N -m edgekd compress ...`")
    return World(rank, size, local)


def setup(device: torch.device) -> World:
    """Join the process group torchrun set up (idempotent); one process: nothing to join."""
    global _world
    w = from_env()
    if not w.distributed:
        _world = ONE
        return ONE
    import torch.distributed as dist

    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(w.local_rank)
    if not dist.is_initialized():
        minutes = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_MIN))
        dist.init_process_group(backend, timeout=timedelta(minutes=minutes))
        _stop_cleanly_on_sigterm()
    _world = World(w.rank, w.size, w.local_rank, dist.get_backend())
    return _world


def world() -> World:
    """This process's place in the group (:data:`ONE` outside torchrun)."""
    return _world


def teardown() -> None:
    global _world
    if _world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _world = ONE


def training_device(device: torch.device) -> torch.device:
    """Each process on its own GPU (``cuda:LOCAL_RANK``) when training runs on CUDA; the CPU stays the CPU."""
    device = torch.device(device)
    w = from_env()
    if device.type != "cuda" or not w.distributed:
        return device
    return torch.device("cuda", w.local_rank)


def barrier() -> None:
    if _world.distributed:
        import torch.distributed as dist

        dist.barrier()


def share(value: Any) -> Any:
    """Rank 0's ``value`` on every process (a small picklable object: a decision, a score)."""
    if not _world.distributed:
        return value
    import torch.distributed as dist

    box = [value if _world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def everywhere(flag: bool) -> bool:
    """True when ``flag`` holds in every process (e.g. a finite loss: one process cannot stop alone)."""
    if not _world.distributed:
        return flag
    return bool(_all_reduce([1.0 if flag else 0.0], "MIN")[0])


def summed(*values: float) -> tuple[float, ...]:
    """Each value summed over the processes (e.g. a training loss and its sample count)."""
    if not _world.distributed:
        return values
    return _all_reduce(values, "SUM")


def _all_reduce(values, op: str) -> tuple[float, ...]:
    import torch.distributed as dist

    t = torch.tensor(list(values), dtype=torch.float64)
    if _world.backend == "nccl":  # NCCL reduces tensors on the GPU only
        t = t.cuda()
    dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
    return tuple(float(v) for v in t.cpu())


def shard(idx: torch.Tensor) -> torch.Tensor:
    """This process's part of one global batch of indices (rank r takes every size-th from r)."""
    return idx[_world.rank::_world.size] if _world.distributed else idx


def check_batch(batch_size: int) -> None:
    """Each process needs two images of a batch (BatchNorm cannot normalise one)."""
    if _world.distributed and batch_size < 2 * _world.size:
        raise InputError(f"a batch of {batch_size} split between {_world.size} processes leaves fewer than 2 images "
                         f"per process (BatchNorm needs 2): use --batch-size {2 * _world.size} or more, or fewer "
                         "processes")


def wrap(model: torch.nn.Module, example: torch.Tensor) -> torch.nn.Module:
    """``model`` under DistributedDataParallel (gradients averaged across processes); itself with one process.

    ``example`` (two images) finds whether some trainable parameter never gets a gradient; DDP is told
    only then (looking for unused parameters costs a pass over the graph every step)."""
    if not _world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=_has_unused(model, example))


def _has_unused(model: torch.nn.Module, example: torch.Tensor) -> bool:
    params = [p for p in model.parameters() if p.requires_grad]
    state = {k: v.clone() for k, v in model.state_dict().items()}  # BatchNorm statistics move in train mode
    try:
        out = model(example)
        grads = torch.autograd.grad(out.float().sum(), params, allow_unused=True)
    finally:
        model.load_state_dict(state)
    return any(g is None for g in grads)


def broadcast_state(model: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers (BatchNorm statistics) on every process."""
    if not _world.distributed:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)


def _stop_cleanly_on_sigterm() -> None:
    """torchrun stops the surviving processes with SIGTERM: unwind (staging folders removed), then exit non-zero."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
