"""``compress()``: the one library entry point. The CLI's ``edgekd compress`` is a thin wrapper.

The pipeline is a list of small stages, each a function from one artifact to the next:

    resolve inputs → evaluate teacher → baselines → distill → prune → quantize (PTQ, QAT)
    → lower (ONNX, OpenVINO; each checked against its torch source) → benchmark → ship → report

Every input is validated before anything is written. Work happens in a staging folder next to
``--out`` that is renamed into place at the end, so a failed run leaves no half-written output.
The stages themselves live in :mod:`edgekd.pipeline`: each keeps its finished output in a stage
cache keyed by its inputs and config, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from . import __version__
from .bench.candidates import Candidate, measure
from .bench.metrics import Metrics
from .config import CompressConfig
from .data import Dataset, load_dataset
from .errors import InputError, NotShippedError, TeacherError
from .stagecache import sweep_leftovers
from .targets import TargetProfile, load_target, shipping_budget

Log = Callable[[str], None]


@dataclass
class Inputs:
    """Everything validated before the first file is written."""

    profile: TargetProfile
    data: Dataset
    teacher: object  # edgekd.models.Teacher
    threads: int
    example: torch.Tensor  # 1×C×H×W from the test split
    unlabelled: object = None  # edgekd.data.unlabelled.Unlabelled (--unlabelled), or None
    student: str = ""  # the student to distil: a zoo name or "from-teacher" (resolved from --student and the teacher)
    derived_base: torch.nn.Module | None = None  # from-teacher: the teacher's architecture as a prunable module


@dataclass
class Result:
    report: dict
    out: Path
    shipped: Candidate | None
    candidates: list[Candidate] = field(default_factory=list)


# --------------------------------------------------------------------------- inputs


def check_settings(cfg: CompressConfig) -> None:
    """Every stage's settings, checked before any work (a bad --prune-ratio fails in a second, not after distilling)."""
    from .distill.augment import check_augment
    from .distill.schedule import check_steps
    from .distill.source import check_teacher_mode
    from .distill.trainer import _check_args
    from .lower._base import check_threads
    from .prune.pruner import _check_config
    from .quantize.int8 import check_quant_config

    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or not 0 <= cfg.seed < 2**32:
        raise InputError(f"--seed must be an integer in [0, 2**32), got {cfg.seed!r}")
    check_steps(cfg.distill.max_steps, "--max-steps", allow_zero=False)
    _check_args(cfg.distill, 0, cfg.distill.lr)
    check_augment(cfg.distill.augment, cfg.distill.mixup)
    check_teacher_mode(cfg.distill.teacher_mode, cfg.distill.cached_views)
    from .distill.features import check_feature_weight

    check_feature_weight(cfg.distill.feature_kd)
    _check_config(cfg.prune)
    check_quant_config(cfg.quant)
    if cfg.bench.threads is not None:
        check_threads(cfg.bench.threads)
    from .bench.metrics import OPERATING_POINTS
    from .errors import did_you_mean

    if cfg.bench.operating_point not in OPERATING_POINTS:
        op = cfg.bench.operating_point
        raise InputError(f"unknown operating point '{op}'{did_you_mean(str(op), OPERATING_POINTS)}: "
                         f"use one of {', '.join(OPERATING_POINTS)}")
    for name in ("warmup", "iterations"):
        v = getattr(cfg.bench, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "warmup" else 1):
            raise InputError(f"--{name} must be an integer >= {0 if name == 'warmup' else 1}, got {v!r}")


def resolve_inputs(cfg: CompressConfig, log: Log) -> Inputs:
    """Target, data and teacher, all checked against each other; raises EdgekdError on bad input."""
    from .models import load_teacher

    check_settings(cfg)
    profile = load_target(cfg.target)
    shipping_budget(profile, cfg.max_auc_drop, cfg.max_sensitivity_drop)  # bad budgets fail before any work
    pre = cfg.preprocessing
    if pre.image_size is None and profile.input_size is not None:
        pre = replace(pre, image_size=profile.input_size)
    if cfg.teacher is None and cfg.data is None:
        from .demo import demo_teacher_and_data

        log("no --teacher/--data: using the embedded demo (synthetic X-ray-like images, not real patients)")
        data, spec, weights = demo_teacher_and_data(pre, seed=cfg.seed, max_samples=cfg.max_samples, log=log)
    elif cfg.teacher is None or cfg.data is None:
        missing = "--teacher" if cfg.teacher is None else "--data"
        raise InputError(f"{missing} is missing: give both --teacher and --data, or neither to run the embedded demo")
    else:
        if cfg.teacher_weights is not None and not Path(cfg.teacher_weights).exists():
            raise InputError(f"teacher weights {cfg.teacher_weights} do not exist")
        data = load_dataset(cfg.data, pre, max_samples=cfg.max_samples, seed=cfg.seed)
        spec, weights = cfg.teacher, cfg.teacher_weights
    from .models.derived import FROM_TEACHER

    if cfg.distill.student == FROM_TEACHER and cfg.distill.student_weights is not None:
        raise InputError("--student-weights is for a zoo student; --student from-teacher starts from the teacher's "
                         "own weights: drop one of the two")
    if cfg.distill.student != FROM_TEACHER:
        check_zoo_student(cfg, profile.default_student, data)  # an unknown student or bad weights fail before any work
    unlabelled = None
    if cfg.unlabelled is not None:
        from .data.unlabelled import load_unlabelled

        unlabelled = load_unlabelled(Path(cfg.unlabelled), data.preprocessing, channels=data.channels,
                                     image_size=tuple(data.image_size))
        log(f"unlabelled: {unlabelled.count} images from {cfg.unlabelled} (soft targets only)")
    teacher = load_teacher(
        spec, weights=weights, trust_checkpoint=cfg.trust_checkpoint,
        in_chans=data.channels, num_classes=data.num_classes,
    )
    teacher.check(data.channels, data.num_classes, data.image_size)
    if cfg.distill.feature_kd:
        from .distill.features import check_feature_kd

        check_feature_kd(cfg.distill.feature_kd, teacher.module)
    example = data.test.images[:1].clone()
    name, base = choose_student(cfg, profile.default_student, teacher, example, log)
    # the profile's thread count is the device's; the host never oversubscribes its own cores
    threads = cfg.bench.threads or min(profile.threads, os.cpu_count() or 1)
    return Inputs(profile, data, teacher, threads, example, unlabelled, name, base)


def check_zoo_student(cfg: CompressConfig, default: str, data: Dataset) -> None:
    """Build the zoo student once (and load --student-weights into it): bad names and weights fail here."""
    from .models import create_student, load_student_weights

    student = create_student(cfg.distill.student or default, data.channels, data.num_classes, seed=cfg.seed)
    if cfg.distill.student_weights is not None:
        load_student_weights(student, Path(cfg.distill.student_weights), in_chans=data.channels,
                             num_classes=data.num_classes)


def choose_student(cfg: CompressConfig, default: str, teacher, example: torch.Tensor, log: Log
                   ) -> tuple[str, torch.nn.Module | None]:
    """The student to distil, and for ``from-teacher`` the teacher's network as a prunable module.

    --student when given; else the teacher's own network cut down (measured better than a fresh zoo
    student, benchmarks/README.md) whenever it can be run as a torch module: timm or a trusted
    pickle directly, ONNX / TorchScript / torch.export through onnx2torch; else, with one line
    saying why, the target profile's zoo student.
    """
    from .models.derived import FROM_TEACHER, derived_base, trial_base

    if cfg.distill.student == FROM_TEACHER:
        return FROM_TEACHER, derived_base(teacher, example)  # an unconvertible teacher fails here, in one line
    if cfg.distill.student is not None or cfg.distill.student_weights is not None:
        return cfg.distill.student or default, None
    if teacher.format in ("timm", "pickle") and teacher.module is not None:
        return FROM_TEACHER, derived_base(teacher, example)
    if teacher.format in ("onnx", "torchscript", "torch.export"):
        try:
            return FROM_TEACHER, trial_base(teacher, example)
        except TeacherError as exc:
            log(f"student: {exc}; distilling the zoo student {default} instead (--student {default} "
                "silences this)")
    return default, None


@contextmanager
def staging(out: Path, overwrite: bool) -> Iterator[Path]:
    """A private folder beside ``out``; renamed to ``out`` on success (or on NotShippedError)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise InputError(f"output folder {out} already exists and is not empty: pass --overwrite or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(out.parent.glob(f".{out.name}.partial-*"))  # folders of killed runs
    stage_dir = out.parent / f".{out.name}.partial-{os.getpid()}-{int(time.time() * 1000)}"
    stage_dir.mkdir()

    def publish() -> None:
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        stage_dir.rename(out)

    try:
        yield stage_dir
    except NotShippedError:
        publish()  # keep the candidates and the report for inspection
        raise
    except BaseException:
        shutil.rmtree(stage_dir, ignore_errors=True)
        raise
    publish()


# --------------------------------------------------------------------------- shipping


def as_numpy(split) -> tuple[np.ndarray, np.ndarray]:
    return split.images.numpy().astype(np.float32, copy=False), split.labels.numpy()


@dataclass(frozen=True)
class Floors:
    """A budget turned into floors on one split's figures: AUC, and sensitivity when it applies."""

    split: str  # "val" (choice) or "test" (confirmation)
    teacher_auc: float
    min_auc: float
    teacher_sensitivity: float | None
    min_sensitivity: float | None  # None: no sensitivity rule (no budget, or the teacher's is undefined)

    @classmethod
    def of(cls, split: str, teacher_auc: float | None, max_drop: float, teacher_sensitivity: float | None,
           max_sensitivity_drop: float | None) -> "Floors":
        auc = float("nan") if teacher_auc is None else float(teacher_auc)
        sens_rule = max_sensitivity_drop is not None and teacher_sensitivity is not None \
            and not np.isnan(teacher_sensitivity)
        return cls(split, auc, auc - max_drop, teacher_sensitivity,
                   teacher_sensitivity - max_sensitivity_drop if sens_rule else None)

    def figures(self, m: Metrics) -> tuple[float, float]:
        """(AUC, sensitivity) of a candidate's metrics on this split (NaN when not measured)."""
        auc = m.auc if self.split == "test" else getattr(m, "val_auc", None)
        sens = m.sensitivity if self.split == "test" else getattr(m, "val_sensitivity", None)
        return (float("nan") if auc is None else auc), (float("nan") if sens is None else sens)

    def auc_ok(self, m: Metrics) -> bool:
        return bool(self.figures(m)[0] >= self.min_auc)

    def sensitivity_ok(self, m: Metrics) -> bool:
        return self.min_sensitivity is None or bool(self.figures(m)[1] >= self.min_sensitivity)

    def text(self, max_drop: float, max_sensitivity_drop: float | None) -> str:
        s = self.split
        return f"{s} AUC >= teacher {s} AUC - {max_drop}" + (
            f" and {s} sensitivity >= teacher {s} sensitivity - {max_sensitivity_drop}"
            if self.min_sensitivity is not None else "")

    def describe(self, m: Metrics) -> str:
        auc, sens = self.figures(m)
        text = f"{self.split} AUC {auc:.4f} (teacher {self.teacher_auc:.4f}, floor {self.min_auc:.4f})"
        if self.min_sensitivity is not None:
            text += (f", {self.split} sensitivity {sens:.4f} (teacher {self.teacher_sensitivity:.4f}, "
                     f"floor {self.min_sensitivity:.4f})")
        return text


def choose_shipped(cands: list[Candidate], profile: TargetProfile, teacher: Metrics, max_drop: float, *,
                   max_sensitivity_drop: float | None = None) -> tuple[Candidate | None, dict]:
    """The fastest deployable student inside both budgets **on val**, then confirmed once on test.

    ``teacher`` is the teacher's Metrics (``val_auc``/``val_sensitivity`` for the choice,
    ``auc``/``sensitivity`` for the confirmation). Eligible: val AUC >= teacher val AUC -
    ``max_drop`` and, when ``max_sensitivity_drop`` is given, val sensitivity >= teacher val
    sensitivity - ``max_sensitivity_drop``. Fastest by measured p50; device-built (TensorRT)
    targets take the profile's precision order. Only the chosen model is then checked on test
    against the same budgets: when that fails nothing ships (no fallback to another candidate,
    which would be choosing on test again).
    """
    val = Floors.of("val", teacher.val_auc, max_drop, teacher.val_sensitivity, max_sensitivity_drop)
    test = Floors.of("test", teacher.auc, max_drop, teacher.sensitivity, max_sensitivity_drop)
    chosen, info = choose_on_val(cands, profile, val, max_drop, max_sensitivity_drop)
    info.update({
        "teacher_auc": test.teacher_auc, "min_auc": test.min_auc, "max_auc_drop": max_drop,
        "teacher_sensitivity": test.teacher_sensitivity, "min_sensitivity": test.min_sensitivity,
        "max_sensitivity_drop": max_sensitivity_drop,
    })
    info["rule"] += f"; then only that model is confirmed on test: {test.text(max_drop, max_sensitivity_drop)}"
    if chosen is None:
        return None, info
    info["confirmation"] = confirm_on_test(chosen, test)
    info["confirmed"] = info["confirmation"]["confirmed"]
    if not info["confirmed"]:
        info["reason"] = (f"{chosen.name} was chosen on val ({val.describe(chosen.metrics)}) but not confirmed "
                          f"on test: {test.describe(chosen.metrics)}; no other candidate is tried on test")
        return None, info
    info["reason"] += f"; confirmed on test: {test.describe(chosen.metrics)}"
    return chosen, info


def choose_on_val(cands: list[Candidate], profile: TargetProfile, val: Floors, max_drop: float,
                  max_sensitivity_drop: float | None) -> tuple[Candidate | None, dict]:
    """The shipping choice on val figures alone; the info dict says what was eligible and why."""
    device_built = profile.runtime == "tensorrt"  # engines are built and timed on the device only
    deployable = [c for c in cands if c.role == "student" and c.backend == profile.runtime
                  and c.precision in profile.precisions and (c.latency is not None or device_built)]
    auc_ok = [c for c in deployable if c.metrics is not None and val.auc_ok(c.metrics)]
    eligible = [c for c in auc_ok if val.sensitivity_ok(c.metrics)]
    budget = val.text(max_drop, max_sensitivity_drop)
    info = {
        "chosen_on": "val",
        "rule": f"fastest {profile.runtime} student with {budget}",
        "teacher_val_auc": val.teacher_auc, "min_val_auc": val.min_auc,
        "teacher_val_sensitivity": val.teacher_sensitivity, "min_val_sensitivity": val.min_sensitivity,
        "deployable": [c.name for c in deployable], "eligible": [c.name for c in eligible],
        "rejected_for_sensitivity": [c.name for c in auc_ok if c not in eligible],
        "chosen": None, "val": None, "confirmation": None, "confirmed": False,
    }
    if not eligible:
        info["reason"] = _not_shipped_reason(profile, deployable, auc_ok, val, max_drop)
        return None, info
    if device_built:
        order = list(profile.precisions)
        chosen = min(eligible, key=lambda c: order.index(c.precision))
        info["rule"] = (f"{profile.runtime} engines cannot be built or timed on the host: the first precision in the "
                        f"profile's order {order} with {budget}")
        info["reason"] = (
            f"{chosen.precision} is the profile's preferred precision among {len(eligible)} eligible on val; "
            f"{val.describe(chosen.metrics)} measured with ONNX Runtime "
            f"on the file the engine is built from; device latency: run the bundle's runner and `edgekd report --merge`"
        )
    else:
        chosen = min(eligible, key=lambda c: c.latency.p50)
        info["reason"] = (f"fastest of {len(eligible)} eligible on val: p50 {chosen.latency.p50:.3f} ms, "
                          f"{val.describe(chosen.metrics)}")
    auc, sens = val.figures(chosen.metrics)
    info["chosen"], info["val"] = chosen.name, {"auc": auc, "sensitivity": sens}
    return chosen, info


def confirm_on_test(chosen: Candidate, test: Floors) -> dict:
    """The one look at test: does the val-chosen model keep both budgets there too?"""
    auc, sens = test.figures(chosen.metrics)
    auc_ok, sens_ok = test.auc_ok(chosen.metrics), test.sensitivity_ok(chosen.metrics)
    return {"on": "test", "candidate": chosen.name, "auc": auc, "min_auc": test.min_auc, "auc_ok": auc_ok,
            "sensitivity": sens, "min_sensitivity": test.min_sensitivity, "sensitivity_ok": sens_ok,
            "confirmed": auc_ok and sens_ok}


def _not_shipped_reason(profile: TargetProfile, deployable: list[Candidate], auc_ok: list[Candidate],
                        val: Floors, max_drop: float) -> str:
    """One line: which val budget no candidate met, and the best candidate against it."""
    if auc_ok:  # the AUC budget was met, sensitivity was not
        best = max(auc_ok, key=lambda c: val.figures(c.metrics)[1])
        auc, sens = val.figures(best.metrics)
        return (f"no {profile.runtime} candidate kept val sensitivity >= {val.min_sensitivity:.4f} "
                f"(teacher {val.teacher_sensitivity:.4f}); best inside the val AUC budget was {best.name} at "
                f"sensitivity {sens:.4f}, AUC {auc:.4f}")
    scored = [c for c in deployable if c.metrics is not None]
    best = max(scored, key=lambda c: np.nan_to_num(val.figures(c.metrics)[0], nan=-1.0), default=None)
    return (f"no {profile.runtime} candidate reached val AUC {val.min_auc:.4f} (teacher {val.teacher_auc:.4f} − {max_drop}); "
            + (f"best was {best.name} at {val.figures(best.metrics)[0]:.4f}" if best else "no deployable candidate"))


def speedups(cands: list[Candidate], shipped: Candidate | None) -> dict:
    """Shipped vs each teacher baseline, from figures measured in this run (none for device-built engines)."""
    if shipped is None or shipped.latency is None:
        return {}
    by = {c.name: c for c in cands}
    out = {}
    for base in ("teacher-torch-fp32", "teacher-onnxruntime-fp32", "teacher-openvino-fp32", "teacher-openvino-int8"):
        b = by.get(base)
        if b is not None and b.latency is not None:
            out[f"latency_vs_{base}"] = b.latency.p50 / shipped.latency.p50
        if b is not None and b.size_bytes and shipped.size_bytes and b.backend != "torch":
            out[f"size_vs_{base}"] = b.size_bytes / shipped.size_bytes
    return out


# --------------------------------------------------------------------------- pipeline


def compress(cfg: CompressConfig, *, log: Log = print) -> Result:
    """Run the whole pipeline. Raises EdgekdError on bad input, NotShippedError when nothing qualifies.

    Finished stages are kept in the stage cache (``cfg.cache_dir``, default ``.edgekd-cache`` beside
    ``--out``) and reused by the next run with the same inputs; Ctrl-C says where it stopped.
    """
    from .pipeline import Run, baselines, distill_student, lower, prune_student, quantize_student, teacher_signal
    from .stagecache import StageStore

    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    inp = resolve_inputs(cfg, log)
    data, profile = inp.data, inp.profile
    cache = Path(cfg.cache_dir) if cfg.cache_dir is not None else Path(cfg.out).parent / ".edgekd-cache"
    store = StageStore(cache, seed=cfg.seed, force=cfg.force, log=log)
    try:
        with staging(cfg.out, cfg.overwrite) as work:
            run = Run(cfg, inp, store, work, log)
            # 1. evaluate the teacher; how it answers for augmented views is decided once (online or cached)
            b = run.budget
            log(f"[1/6] evaluate teacher ({inp.teacher.format}) on {data.split_sizes()}; training budget "
                f"{b.distill} distillation steps ({'derived from the data size' if b.derived else '--max-steps'}), "
                f"prune fine-tunes {b.finetune}, recovery {b.recovery}, QAT {b.qat}")
            tl, tl_key = teacher_signal(run)
            cands = baselines(run)
            # 2-3. distill, prune
            student, distilled, key = distill_student(run, tl, tl_key)
            cands.append(distilled)
            student, pruned, key = prune_student(run, student, tl, key)
            if pruned is not None:
                cands.append(pruned)
            fp32_source = cands[-1]
            opset = 17
            if profile.runtime == "tensorrt":  # the device's ONNX parser decides the opset (TensorRT 8.2: <= 13)
                from .lower.tensorrt import export_opset

                opset = export_opset(profile.tensorrt)
            lowered = lower(run, student, fp32_source, "fp32", key, opset)
            # 4-5. quantize (PTQ then QAT with the distillation loss), lower INT8
            if cfg.quant.enabled and "int8" in profile.precisions:
                qmodel, qcands, qkey = quantize_student(run, student, fp32_source, tl, key)
                cands += qcands
                if qmodel is not None:
                    log("[5/6] lower to ONNX and OpenVINO (fp32 and INT8), each checked against its torch source")
                    lowered += lower(run, qmodel, qcands[-1], "int8", qkey, opset)
            else:
                log("[4/6] quantize: skipped" + (" (target allows no int8)" if cfg.quant.enabled else ""))
                log("[5/6] lower to ONNX and OpenVINO (fp32), each checked against its torch source")
            if profile.runtime == "tensorrt":
                from .lowering import lower_for_tensorrt

                lowered += lower_for_tensorrt(inp, lowered, work)
            cands += lowered
            store.current = "benchmark"
            result = _benchmark_and_ship(cfg, inp, cands, run.stages, work, t0, log)
            store.current = None
    except KeyboardInterrupt:
        done = ", ".join(store.finished) or "none"
        log(f"interrupted during stage {store.current or 'set-up'}; finished stages ({done}) are kept in {cache}: "
            "run the same command again to resume")
        raise
    return result


def _benchmark_and_ship(cfg: CompressConfig, inp: Inputs, cands: list[Candidate], stages: dict, work: Path,
                        t0: float, log: Log) -> Result:
    """Measure every candidate, choose the shipped one, write the report and the bundle."""
    from .bench.html import write_html
    from .bench.report import write_report

    data, profile, threads = inp.data, inp.profile, inp.threads
    log(f"[6/6] benchmark {len(cands)} candidates (batch 1, {threads} threads)")
    val, test = as_numpy(data.val), as_numpy(data.test)
    for c in cands:
        measure(c, val, test, cfg.bench, threads, reference=cands[0].metrics, seed=cfg.seed,
                batch=cfg.bench.batch or profile.batch)
    teacher_c, budget = cands[0], shipping_budget(profile, cfg.max_auc_drop, cfg.max_sensitivity_drop)
    shipped, ship_info = choose_shipped(cands, profile, teacher_c.metrics, budget.max_auc_drop,
                                        max_sensitivity_drop=budget.max_sensitivity_drop)
    ship_info["budget_source"] = budget.source
    ship_info["teacher_candidate"] = teacher_c.name
    report = build_report(cfg, inp, cands, shipped, ship_info, stages, work, time.perf_counter() - t0)
    if shipped is not None:
        from .bundle import bundle_entry, finish_bundle, write_bundle

        shipped_d = next(c for c in report["candidates"] if c["name"] == shipped.name)
        bundle = write_bundle(work, shipped_d, data, profile, cfg.seed)
        report["bundle"] = bundle_entry(bundle, archive=cfg.archive)
    write_report(report, work)
    write_html(report, work, data)
    if shipped is not None:
        finish_bundle(bundle, report)
    result = Result(report, Path(cfg.out), shipped, cands)
    if shipped is None:
        raise not_shipped(ship_info, Path(cfg.out))
    return result


def training_section(cfg: CompressConfig, stages: dict) -> dict:
    """How the students were taught: step budgets, the teacher's mode, the augmentation (report.json "training")."""
    teacher = stages.get("teacher", {})
    return {"budget": stages.get("budget"), "teacher_mode": teacher.get("mode"), "teacher_mode_reason": teacher.get("why"),
            "cached_views": teacher.get("views"), "augmentation": teacher.get("augmentation"),
            "unlabelled_images": teacher.get("unlabelled_images", 0), "selection":
            "lowest val KL(teacher ‖ student) among checkpoints after "
            f"{cfg.distill.min_fraction:.0%} of the budget, within 0.01 of the best val AUC"}


def not_shipped(ship_info: dict, out: Path) -> NotShippedError:
    """The one-line exit-3 error: why nothing shipped (nothing eligible on val, or the val choice not
    confirmed on test), and where the evidence was kept."""
    return NotShippedError(f"nothing shipped: {ship_info['reason']}; candidates and report kept in {out}")


def build_report(cfg: CompressConfig, inp: Inputs, cands: list[Candidate], shipped: Candidate | None,
                 ship_info: dict, stages: dict, work: Path, seconds: float) -> dict:
    from .bench.machine import machine_info
    from .bench.precision import precision_notes
    from .bench.report import SCHEMA_VERSION

    from .bench.clinical import clinical_section

    d, t = inp.data, inp.teacher
    cand_dicts = [c.to_dict(work) for c in cands]
    clinical = clinical_section(cands, shipped, d.test.labels.numpy(), cand_dicts, cfg.bench.operating_point,
                                cfg.bench.bootstrap_resamples, cfg.seed, margin=ship_info["max_auc_drop"])
    chosen = ship_info.get("chosen")
    ship_info["non_inferiority"] = clinical["vs_teacher"].get(chosen) if chosen else None
    return {
        "schema_version": SCHEMA_VERSION,
        "edgekd_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": cfg.seed,
        "target": inp.profile.to_dict(),
        "teacher": {"spec": t.spec, "path": str(t.path) if t.path else None, "sha256": t.sha256, "format": t.format},
        "dataset": {
            "path": str(d.path) if d.path else None, "sha256": d.sha256, "format": d.format,
            "synthetic": d.format == "synthetic", "num_classes": d.num_classes, "class_names": d.class_names,
            "channels": d.channels, "image_size": list(d.image_size), "splits": d.split_sizes(),
        },
        "preprocessing": d.preprocessing.to_dict(),
        "machine": machine_info(inp.threads),
        "config": cfg.to_dict(),
        "training": training_section(cfg, stages),
        "stages": stages,
        "candidates": cand_dicts,
        "shipped": shipped.name if shipped else None,
        "shipping": ship_info,
        "clinical": clinical,
        "speedups": speedups(cands, shipped),
        "precision_notes": precision_notes(cands, inp.profile, shipped),
        "seconds": seconds,
    }
