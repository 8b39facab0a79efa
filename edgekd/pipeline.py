"""The pipeline's resumable stages: each one reuses its finished output or computes and keeps it.

    teacher-signal → baselines → distill → prune → lower-fp32 → quantize → lower-int8

Every stage writes into a :class:`~edgekd.stagecache.StageStore` entry keyed by what it depends
on (see that module), and the run always continues from what the entry holds, whether it was
just computed or reused: an interrupted-and-resumed run and an uninterrupted one follow the same
code from every stage boundary on. Models travel between stages as files that need no pickle
(state_dicts read with ``weights_only=True``, the pruned structure as JSON, ONNX, OpenVINO IR).
Benchmarking, shipping and the report are always done afresh: every figure in a report is
measured in the run that writes it.
"""
from __future__ import annotations

import copy
import hashlib
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ._io import sha256_file, size_on_disk
from .bench.candidates import Candidate, state_dict_bytes
from .config import CompressConfig
from .errors import EdgekdError
from .stagecache import DONE, StageEntry, StageStore, digest

Log = Callable[[str], None]
SIMULATED = "NNCF fake-quantized torch model (simulated INT8): accuracy only; latency is measured on the lowered INT8 files"


@dataclass
class Run:
    """One compress run: validated inputs, the stage store and the output folder being written."""

    cfg: CompressConfig
    inp: object  # edgekd.api.Inputs
    store: StageStore
    work: Path
    log: Log
    data_key: str = ""
    teacher_key: str = ""
    stages: dict = field(default_factory=dict)  # per stage: what report.json's "stages" holds
    budget: object = None  # edgekd.distill.Budget: optimizer steps of every training stage

    def __post_init__(self) -> None:
        from .distill import plan

        self.data_key = fingerprint_data(self.inp.data)
        t = self.inp.teacher
        self.teacher_key = digest(t.format, t.spec if str(t.spec).startswith("timm:") else None, t.sha256)
        d, cfg = self.inp.data, self.cfg
        n_pool = len(d.train) + (len(self.inp.unlabelled.images) if self.inp.unlabelled is not None else 0)
        self.budget = plan(n_pool, cfg.distill.batch_size, cfg.distill.max_steps, finetune=cfg.prune.finetune_steps,
                           recovery=cfg.prune.recovery_steps, qat=cfg.quant.qat_steps)
        self.stages["budget"] = self.budget.to_dict()

    def build_student(self, name: str) -> torch.nn.Module:
        """A fresh, seeded student of the data's channels and classes (weights are loaded into it).

        For ``from-teacher`` it is the teacher's unpruned architecture (rebuilt from the teacher):
        the base that the derived and the pruned students' JSON structures are relative to.
        """
        from .models import create_student
        from .models.derived import FROM_TEACHER, derived_base

        if name == FROM_TEACHER:
            if self.inp.derived_base is None:  # deterministic per teacher file: built once
                self.inp.derived_base = derived_base(self.inp.teacher, self.inp.example)
            return copy.deepcopy(self.inp.derived_base)
        return create_student(name, self.inp.data.channels, self.inp.data.num_classes, seed=self.cfg.seed)

    def starting_student(self, name: str) -> tuple[torch.nn.Module, dict | None]:
        """The student distillation starts from: fresh, or with --student-weights loaded (and what was loaded)."""
        model = self.build_student(name)
        path = self.cfg.distill.student_weights
        if path is None:
            return model, None
        from .models import load_student_weights

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


def fingerprint_data(data) -> str:
    """sha256 over the preprocessed tensors of every split, labels and class names.

    This covers the file, the preprocessing, ``--max-samples`` and the seed that drew the subset:
    whatever changes what the model sees changes the key.
    """
    h = hashlib.sha256()
    for split in (data.train, data.val, data.test):
        h.update(np.ascontiguousarray(split.images.numpy()).tobytes())
        h.update(np.ascontiguousarray(split.labels.numpy()).tobytes())
    h.update(repr((data.class_names, data.channels, tuple(data.image_size))).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- candidates as files


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
            "timed": c.timed}


def candidate_from_record(d: dict, folder: Path, threads: int) -> Candidate:
    from .lower import get_backend
    from .lower.validate import Agreement

    path = folder / d["path"] if d["inside"] else Path(d["path"])
    runner = get_backend(d["backend"]).open_runner(path, threads=threads, precision=d["precision"])
    return Candidate(d["name"], d["stage"], d["backend"], d["precision"], d["role"], runner, path,
                     size_on_disk(path), d["params"], d["macs"],
                     agreement=Agreement(**d["agreement"]) if d["agreement"] else None,
                     source=d["source"], notes=list(d["notes"]), timed=d["timed"])


def _lowered_stage(run: Run, stage: str, key: str, sub: str, produce: Callable[[Path], list[Candidate]],
                   what: str) -> list[Candidate]:
    """Run a stage that writes model files; return its candidates rebuilt from the output folder."""
    def _produce(folder: Path) -> dict:
        return {"candidates": [candidate_record(c, folder) for c in produce(folder)]}

    entry = run.store.run(stage, key, _produce, what)
    dest = run.copy_in(entry, sub)
    return [candidate_from_record(d, dest, run.inp.threads) for d in entry.info["candidates"]]


# --------------------------------------------------------------------------- stages


def teacher_signal(run: Run) -> tuple["object", str]:
    """Stage 1: the teacher on val, on the clean training pool and (cached mode) on augmented views of it.

    Online mode keeps only the clean logits here: later stages ask the teacher about each batch.
    """
    from .distill.augment import Augmenter
    from .distill.source import Pool, TeacherSignal, build_signal, cached_view_count, choose_mode, load_views

    cfg, inp, d = run.cfg.distill, run.inp, run.inp.data
    unl = inp.unlabelled
    pool = Pool.of(d.train.images, d.train.labels, unl.images if unl is not None else None)
    pre = d.preprocessing
    aug = Augmenter(cfg.augment, mean=tuple(pre.mean), std=tuple(pre.std), channels=d.channels, flips=cfg.flips,
                    mixup=cfg.mixup)
    image_bytes = int(pool.images[0].numel())
    views = cached_view_count(len(pool), run.budget.distill, cfg.batch_size, image_bytes, cfg.cached_views)
    mode, why = choose_mode(cfg.teacher_mode, augment=aug.active, n_pool=len(pool), steps=run.budget.distill,
                            batch_size=cfg.batch_size, views=views, features=cfg.feature_kd > 0)
    key = run.store.key("teacher-signal", run.teacher_key, run.data_key, unl.sha256 if unl is not None else None,
                        mode, views if mode == "cached" else None, cfg.augment, cfg.flips, cfg.mixup, run.cfg.seed)

    def produce(folder: Path) -> dict:
        sig = build_signal(mode, pool, d.val.images, inp.teacher.logits, aug, views=views, seed=run.cfg.seed,
                           folder=folder, why=why)
        np.savez(folder / "teacher_logits.npz", clean=sig.clean.numpy(), val=sig.val.numpy())
        return dict(sig.info)

    what = f"{mode}" + (f", {views} views of {len(pool)} images" if mode == "cached" else "")
    entry = run.store.run("teacher-signal", key, produce, what)
    with np.load(entry.file("teacher_logits.npz"), allow_pickle=False) as z:
        clean, val = torch.from_numpy(z["clean"]), torch.from_numpy(z["val"])
    sig = TeacherSignal(mode, pool, val, clean, augmenter=aug, mean=aug.mean,
                        std=aug.std, info=dict(entry.info))
    if mode == "online":
        sig.teacher = inp.teacher.logits
        if cfg.feature_kd > 0:
            sig.feature_module = inp.teacher.module
    elif mode == "cached":
        sig.attach_views(load_views(entry.path))
    run.stages["teacher"] = dict(entry.info)
    return sig, key


def baselines(run: Run) -> list[Candidate]:
    """Stage 2: the teacher as a user would deploy it without edgekd (torch, ORT, OpenVINO fp32 and INT8 PTQ)."""
    from .lowering import teacher_baselines, teacher_torch_candidate

    cfg = run.cfg
    key = run.store.key("baselines", run.teacher_key, run.data_key, cfg.quant.calibration_samples, cfg.seed)
    live = teacher_torch_candidate(run.inp)
    files = _lowered_stage(run, "baselines", key, "baselines",
                           lambda folder: teacher_baselines(run.inp, folder, cfg, run.log, live), "teacher files")
    return ([live] if live is not None else []) + files


def distill_student(run: Run, tl, tl_key: str) -> tuple[torch.nn.Module, Candidate, str]:
    """Stage 3: knowledge distillation of the profile's (or --student) student."""
    from .distill import distill
    from .lower.torch import TorchRunner
    from .models import count_macs, count_params
    from .models.derived import FROM_TEACHER, REFERENCE_STUDENT, derive_student, load_derived, reference_macs, save_derived

    cfg, inp = run.cfg, run.inp
    name = inp.student
    steps = run.budget.distill
    weights = cfg.distill.student_weights
    key = run.store.key("distill", tl_key, name, asdict(cfg.distill),
                        sha256_file(Path(weights)) if weights is not None else None, steps, cfg.seed)

    derived = name == FROM_TEACHER

    def produce(folder: Path) -> dict:
        info: dict = {"student": name}
        if derived:  # the teacher's own architecture and weights, cut to the profile student's MACs
            ref = inp.profile.default_student if inp.profile.default_student != FROM_TEACHER else REFERENCE_STUDENT
            run.log(f"student: the teacher's own network, cut to the MACs of {ref} (blocks, then channels)")
            ds = derive_student(inp.teacher, example=inp.example, val_images=inp.data.val.images,
                                val_teacher_logits=tl.val, train_images=inp.data.train.images,
                                macs=reference_macs(inp.example, inp.data.num_classes, ref),
                                temperature=cfg.distill.temperature)
            start, loaded = ds.model, None
            info.update(start="derived from the teacher", derived={**ds.record, "macs_reference": ref})
        else:
            start, loaded = run.starting_student(name)
            info.update(start="weights" if loaded else "random init", student_weights=loaded)
        res = distill(start, inp.data, tl, cfg.distill, steps=steps, seed=cfg.seed, features=True)
        if derived:
            save_derived(res.model, inp.teacher, folder, inp.example)  # student.structure.json + student.pt
        else:
            torch.save(_state(res.model), folder / "student.pt")
        return {**info, "steps_planned": steps, "steps_run": res.steps_run, "best_step": res.best_step,
                "best_val_auc": res.best_val_auc, "val_kl": res.val_kl, "history": res.history}

    run.log(f"[2/6] distill {name}: {steps} steps of {cfg.distill.batch_size} ({tl.mode} teacher, "
            f"T={cfg.distill.temperature}, alpha={cfg.distill.alpha})")
    entry = run.store.run("distill", key, produce, name)
    if derived:
        model = load_derived(inp.teacher, entry.path, inp.example)
    else:
        model = run.build_student(name)
        model.load_state_dict(torch.load(entry.file("student.pt"), map_location="cpu", weights_only=True))
    model.eval()
    run.copy_in(entry, "models/distilled")
    run.stages["distill"] = dict(entry.info)
    c = Candidate("student-distilled", "distill", "torch", "fp32", "student", TorchRunner(model, inp.threads),
                  None, state_dict_bytes(model), count_params(model), count_macs(model, inp.example))
    return model, c, key


def prune_student(run: Run, model: torch.nn.Module, tl, distill_key: str) -> tuple[torch.nn.Module, Candidate | None, str]:
    """Stage 4: structured pruning toward a MACs ratio, with distillation fine-tuning."""
    from .lower.torch import TorchRunner
    from .prune import prune
    from .prune.serialize import load_pruned, save_pruned

    cfg, inp = run.cfg, run.inp
    if cfg.prune.ratio <= 0 and cfg.prune.depth == 0:
        run.log("[3/6] prune: skipped (--prune-ratio 0, --prune-depth 0)")
        return model, None, distill_key
    name = run.stages["distill"]["student"]
    build = lambda: run.build_student(name)  # noqa: E731
    b = run.budget
    key = run.store.key("prune", distill_key, asdict(cfg.prune), b.finetune, b.recovery)

    def produce(folder: Path) -> dict:
        res = prune(model, inp.data, tl, cfg.prune, cfg.distill, finetune_steps=b.finetune,
                    recovery_steps=b.recovery, seed=cfg.seed)
        save_pruned(res.model, build(), folder)
        return {"macs_before": res.macs_before, "macs_after": res.macs_after, "params_before": res.params_before,
                "params_after": res.params_after, "steps": res.steps}

    parts = (["half of the removable blocks" if cfg.prune.depth is None else f"{cfg.prune.depth} whole blocks"]
             if cfg.prune.depth != 0 else []) + \
        ([f"{cfg.prune.ratio:.0%} of MACs in {cfg.prune.steps} steps"] if cfg.prune.ratio > 0 else [])
    what = ", then ".join(parts)
    run.log(f"[3/6] prune {what} (Torch-Pruning DepGraph)")
    entry = run.store.run("prune", key, produce, what)
    pruned = load_pruned(build, entry.path)
    run.copy_in(entry, "models/pruned")
    run.stages["prune"] = dict(entry.info)
    info = entry.info
    c = Candidate("student-pruned", "prune", "torch", "fp32", "student", TorchRunner(pruned, inp.threads), None,
                  state_dict_bytes(pruned), info["params_after"], info["macs_after"])
    return pruned, c, key


def lower(run: Run, model: torch.nn.Module, source: Candidate, precision: str, key_in: str, opset: int
          ) -> list[Candidate]:
    """Stages 5 and 7: ONNX and OpenVINO files of one torch student, each checked against it."""
    from .lowering import lower_student

    stage = f"lower-{precision}"
    key = run.store.key(stage, key_in, opset)
    return _lowered_stage(run, stage, key, "models",
                          lambda folder: lower_student(model, source, precision, run.inp, folder, opset),
                          f"ONNX + OpenVINO {precision}")


def quantize_student(run: Run, model: torch.nn.Module, fp32: Candidate, tl, prune_key: str
                     ) -> tuple[torch.nn.Module, list[Candidate], str]:
    """Stage 6: NNCF post-training INT8, then quantization-aware fine-tuning with the KD loss."""
    from .lower.torch import TorchRunner
    from .quantize import calibration_subset, quantize_ptq, quantize_qat

    cfg, inp = run.cfg, run.inp
    calib = calibration_subset(inp.data.train, cfg.quant.calibration_samples, cfg.seed)
    qat_steps = run.budget.qat
    key = run.store.key("quantize", prune_key, asdict(cfg.quant), qat_steps, cfg.seed)

    probe = calib[:8]

    def produce(folder: Path) -> dict:
        try:
            ptq = quantize_ptq(model, calib)  # NNCF's extension was prepared above
        except EdgekdError:
            raise
        except Exception as exc:  # noqa: BLE001 - NNCF cannot trace this student: INT8 is skipped, fp32 still ships
            reason = f"NNCF could not quantize this student ({type(exc).__name__}: {str(exc)[:120]})"
            return {"skipped": reason, "calibration_samples": len(calib), "qat_steps": 0}
        info: dict = {"calibration_samples": len(calib), "qat_steps": qat_steps}
        _save_quantized(ptq, probe, folder / "ptq.pt")
        if qat_steps > 0:
            res = quantize_qat(ptq, inp.data, tl, cfg.quant, cfg.distill, steps=qat_steps, seed=cfg.seed)  # trains ptq in place
            _save_quantized(res.model, probe, folder / "qat.pt")
            info.update(best_val_auc=res.best_val_auc, best_step=res.best_step, steps_run=res.steps_run,
                        history=res.history)
        return info

    run.log(f"[4/6] INT8: NNCF post-training quantization ({len(calib)} images), "
            f"then {qat_steps} QAT steps")
    from .quantize._nncf_ext import nncf_kernels, prepare_nncf

    prepare_nncf(run.log)  # build its C++ extension once, with a timeout a busy machine can meet
    entry = run.store.run("quantize", key, produce, "PTQ + QAT")
    run.copy_in(entry, "models/quantized")
    run.stages["quantize"] = dict(entry.info, nncf_kernels=nncf_kernels())
    if entry.info.get("skipped"):
        run.log(f"INT8 skipped: {entry.info['skipped']}; the fp32 candidates remain (a zoo student, --student "
                f"{inp.profile.default_student}, quantizes)")
        return None, [], key

    def rebuild(name: str) -> torch.nn.Module:
        # NNCF's quantizer placement does not depend on the statistics: PTQ on one image rebuilds the
        # structure in a second, then the saved state (scales, weights) replaces everything it computed
        saved = torch.load(entry.file(name), map_location="cpu", weights_only=True)
        q = quantize_ptq(model, calib[:1])
        q.load_state_dict(saved["state"])
        q.eval()
        with torch.no_grad():
            # same weights and scales: equal up to float summation order (thread counts may differ)
            if not torch.allclose(q(probe), saved["probe_logits"], rtol=1e-4, atol=1e-4):
                raise RuntimeError(f"internal: the INT8 model rebuilt from {entry.file(name)} does not reproduce "
                                   "its saved outputs; re-run with --force")
        return q

    models = [("student-int8-ptq", rebuild("ptq.pt"))]
    if entry.file("qat.pt").exists():
        models.append(("student-int8-qat", rebuild("qat.pt")))
    cands = [Candidate(n, "quantize", "torch", "int8", "student", TorchRunner(m, inp.threads), None, None,
                       fp32.params, fp32.macs, timed=False, notes=[SIMULATED]) for n, m in models]
    return models[-1][1], cands, key


def _save_quantized(model: torch.nn.Module, probe: torch.Tensor, path: Path) -> None:
    """The quantized model's state and its logits on a few images (checked when it is rebuilt)."""
    model.eval()
    with torch.no_grad():
        logits = model(probe).detach().clone()
    torch.save({"state": _state(model), "probe_logits": logits}, path)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
