"""One compress run: the validated inputs, the stage store, the output folder, and what each stage hands on."""
from __future__ import annotations

import copy
import hashlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .._io import size_on_disk
from ..config import CompressConfig
from ..measure.candidates import Candidate
from ..stagecache import DONE, StageEntry, StageStore, digest

Log = Callable[[str], None]


@dataclass
class Run:
    """The state one compress run threads through its stages.

    The first block is fixed when the run starts; the second is what the stages hand on (each
    stage reads what the ones before it set, and sets its own). ``stages`` is what
    ``report.json["stages"]`` holds, per stage name.
    """

    cfg: CompressConfig
    inp: object  # edgekd.inputs.Inputs
    store: StageStore
    work: Path  # the output folder being written (staged; renamed into place at the end)
    log: Log
    data_key: str = ""
    teacher_key: str = ""
    budget: object = None  # edgekd.distill.Budget: optimizer steps of every training stage
    stages: dict = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # stage name -> its cache key (the chain)
    search: object = None  # edgekd.search.SearchResult when --search chose this run's configuration

    signal: object = None  # edgekd.distill.TeacherSignal (teacher-signal)
    candidates: list[Candidate] = field(default_factory=list)  # every model that could ship, in stage order
    student: torch.nn.Module | None = None  # the current fp32 torch student (distill, then prune)
    student_candidate: Candidate | None = None  # its candidate (what the fp32 files are checked against)
    student_key: str = ""  # the key of the stage that made it
    quantized: torch.nn.Module | None = None  # the INT8 torch student (quantize), None when INT8 is skipped
    quantized_candidate: Candidate | None = None
    lowered: list[Candidate] = field(default_factory=list)  # file-backed students (lower-*)
    shipped: Candidate | None = None  # benchmark: the chosen candidate (None: nothing shipped)
    ship_info: dict | None = None  # benchmark: report.json "shipping"
    report: dict | None = None  # benchmark: report.json as written
    started: float = field(default_factory=time.perf_counter)  # when compress() began (report "seconds")

    def __post_init__(self) -> None:
        from ..distill import plan

        if not self.data_key:  # given by a caller that runs many Runs on the same inputs (--search)
            self.data_key = fingerprint_data(self.inp.data)
        if not self.teacher_key:
            t = self.inp.teacher
            self.teacher_key = digest(t.format, t.spec if str(t.spec).startswith(("timm:", "smp:")) else None, t.sha256)
        cfg, obj = self.cfg, self.inp.task.objective
        n_pool = len(self.inp.data.train) + (len(self.inp.unlabelled.images) if self.inp.unlabelled is not None else 0)
        self.budget = plan(n_pool, obj.batch_of(cfg.distill), cfg.distill.max_steps, finetune=cfg.prune.finetune_steps,
                           recovery=cfg.prune.recovery_steps, qat=cfg.quant.qat_steps, min_steps=obj.min_steps)
        self.stages["budget"] = self.budget.to_dict()

    @property
    def device(self) -> torch.device:
        """Where the training stages run (--device); what they produce is saved from the CPU."""
        return self.inp.device

    def device_key(self, device: torch.device | None = None) -> tuple:
        """What a stage key adds for a training device: nothing for the CPU (the keys of CPU runs are as they
        were), the device otherwise (CUDA kernels and bf16 autocast give other numbers than the CPU's); for the
        training stages (``device`` None) also the number of torchrun processes when there are several (each
        normalises its part of a batch and draws its own views: another result than one process's)."""
        from .. import _dist

        world = _dist.world()
        procs = (f"processes={world.size}",) if device is None and world.distributed else ()
        device = self.device if device is None else device
        return (() if device.type == "cpu" else (f"device={device}",)) + procs

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def opset(self) -> int:
        """The ONNX opset of every exported student: 17, or what the device's TensorRT parser reads."""
        from ..lower import export_opset

        return export_opset(self.inp.profile)

    def build_student(self, name: str) -> torch.nn.Module:
        """A fresh, seeded student of the data's channels and classes (weights are loaded into it).

        For ``from-teacher`` it is the teacher's unpruned architecture (rebuilt from the teacher):
        the base that the derived and the pruned students' JSON structures are relative to.
        """
        from ..prune.derived import FROM_TEACHER, derived_base

        if name == FROM_TEACHER:
            if self.inp.derived_base is None:  # deterministic per teacher file: built once
                self.inp.derived_base = derived_base(self.inp.teacher, self.inp.example)
            return copy.deepcopy(self.inp.derived_base)
        return self.inp.task.create_student(name, self.inp.data.channels, self.inp.data.num_classes, self.cfg.seed)

    def starting_student(self, name: str) -> tuple[torch.nn.Module, dict | None]:
        """The student distillation starts from: fresh, or with --student-weights loaded (and what was loaded)."""
        model = self.build_student(name)
        path = self.cfg.distill.student_weights
        if path is None:
            return model, None
        from ..models import load_student_weights

        d = self.inp.data
        return model, load_student_weights(model, Path(path), in_chans=d.channels, num_classes=d.num_classes)

    def copy_in(self, entry: StageEntry, sub: str) -> Path:
        """Copy a stage entry's files into ``work/sub`` (the output folder keeps every artifact)."""
        dest = self.work / sub
        dest.mkdir(parents=True, exist_ok=True)
        for p in sorted(entry.path.iterdir()):
            if p.is_file() and p.name != DONE:
                shutil.copyfile(p, dest / p.name)
        return dest

    def file_candidates(self, entry: StageEntry, sub: str) -> list[Candidate]:
        """The candidates a file-writing stage recorded, rebuilt from its files copied into ``work/sub``."""
        dest = self.copy_in(entry, sub)
        return [candidate_from_record(d, dest, self.inp.threads) for d in entry.info["candidates"]]


def fingerprint_data(data) -> str:
    """sha256 over the preprocessed tensors of every split, labels (or masks) and class names.

    This covers the file, the preprocessing, ``--max-samples`` and the seed that drew the subset:
    whatever changes what the model sees changes the key. The images are hashed chunk by chunk (the
    same digest as the whole tensor's bytes), so a train split read from disk is never held whole.
    """
    from ..data.lazy import chunks
    from ..distill.objective import objective_for

    h, obj = hashlib.sha256(), objective_for(data)
    for split in (data.train, data.val, data.test):
        for x in chunks(split.images):
            h.update(np.ascontiguousarray(x.numpy()).data)
        h.update(np.ascontiguousarray(obj.targets(split).numpy()).tobytes())
    h.update(repr((data.class_names, data.channels, tuple(data.image_size))).encode())
    return h.hexdigest()


def candidate_record(c: Candidate, folder: Path) -> dict:
    """What rebuilds a file-backed candidate: everything but the runner; paths relative to the stage."""
    path = Path(c.path)
    try:
        rel, inside = path.resolve().relative_to(folder.resolve()).as_posix(), True
    except ValueError:
        rel, inside = str(path.resolve()), False
    return {"name": c.name, "stage": c.stage, "backend": c.backend, "precision": c.precision, "role": c.role,
            "path": rel, "inside": inside, "params": c.params, "macs": c.macs, "source": c.source,
            "agreement": c.agreement.to_dict() if c.agreement is not None else None, "notes": list(c.notes),
            "timed": c.timed, "layers": c.layers}


def candidate_from_record(d: dict, folder: Path, threads: int) -> Candidate:
    from ..lower import get_backend
    from ..lower.validate import Agreement

    path = folder / d["path"] if d["inside"] else Path(d["path"])
    runner = get_backend(d["backend"]).open_runner(path, threads=threads, precision=d["precision"])
    return Candidate(d["name"], d["stage"], d["backend"], d["precision"], d["role"], runner, path,
                     size_on_disk(path), d["params"], d["macs"],
                     agreement=Agreement(**d["agreement"]) if d["agreement"] else None,
                     source=d["source"], notes=list(d["notes"]), timed=d["timed"], layers=d.get("layers"))


def records(cands: list[Candidate], folder: Path) -> dict:
    """A file-writing stage's done.json facts: its candidates (see :func:`candidate_record`)."""
    return {"candidates": [candidate_record(c, folder) for c in cands]}


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
