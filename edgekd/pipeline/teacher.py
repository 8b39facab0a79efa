"""The teacher's stages: what it answers for the training pool (teacher-signal), and how it runs
deployed without edgekd (baselines: the figures every speed-up is measured against)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .._io import size_on_disk
from ..measure.candidates import Candidate
from .run import Run, records
from .stage import Stage

# A torch teacher on the CPU answers the stage through its OpenVINO fp32 conversion (checked against it first)
# when the stage asks it for at least this many multiply-accumulates: OpenVINO ran the segmentation benchmark's
# U-Net ResNet-34 (1.94 G MACs at 128×128) at 17 ms per image against torch's 37 on 2 cores at batch 64 (quiet
# machine; torch's batch 8: 28 ms), and the conversion
# takes seconds, which a small teacher's whole stage does not. 2e12 MACs are about a minute of torch there.
FILE_TEACHER_MIN_MACS = 2e12
FILE_TEACHER_BATCH = 64  # images per OpenVINO call (per-pixel logits: 64 × 2 × 128 × 128 floats are 8 MB)


class TeacherSignalStage(Stage):
    """The teacher on val, on the clean training pool and (cached mode) on augmented views of it.

    Online mode keeps only the clean logits here: later stages ask the teacher about each batch.
    How the teacher answers for augmented views (online or cached) is decided here, once.
    """

    name = "teacher-signal"
    ranks = "shared"  # rank 0 asks the teacher; other processes read its answers from the stage cache

    def _plan(self, run: Run):
        """(pool, augmenter, cached views, mode, why): decided once per run (the stage object is the run's)."""
        if getattr(self, "_decided", None) is None:
            self._decided = self._decide(run)
        return self._decided

    def _decide(self, run: Run):
        from ..distill.objective import objective_for
        from ..distill.source import Pool, cached_view_count, choose_mode

        cfg, d, unl = run.cfg.distill, run.inp.data, run.inp.unlabelled
        obj = objective_for(d)
        pool = Pool.of(d.train.images, obj.targets(d.train), unl.images if unl is not None else None)
        aug = obj.augmenter(cfg, d)
        view_bytes = int(pool.images[0].numel())  # 8-bit pixels; segmentation adds the mask and float16 logits
        if obj.task == "segmentation":
            h, w = d.image_size
            view_bytes += 2 * h * w * (1 + d.num_classes)
        views = cached_view_count(len(pool), run.budget.distill, run.budget.batch_size, view_bytes, cfg.cached_views)
        mode, why = choose_mode(cfg.teacher_mode, augment=aug.active, n_pool=len(pool), steps=run.budget.distill,
                                batch_size=run.budget.batch_size, views=views, device=str(run.inp.teacher.device),
                                features=cfg.feature_kd > 0, view_bytes=view_bytes)
        answers = len(pool) * (1 + (views if mode == "cached" else 0)) + len(d.val)
        return pool, aug, views, mode, why, answered_by_file(run, answers, online=mode == "online")

    def announce(self, run: Run) -> str:
        b, inp = run.budget, run.inp
        return (f"evaluate teacher ({inp.teacher.format}) on {inp.data.split_sizes()}; training budget "
                f"{b.distill} distillation steps ({'derived from the data size' if b.derived else '--max-steps'}), "
                f"prune fine-tunes {b.finetune}, recovery {b.recovery}, QAT {b.qat}")

    def key(self, run: Run) -> str:
        cfg, unl = run.cfg.distill, run.inp.unlabelled
        _, _, views, mode, _, by_file = self._plan(run)
        return run.store.key(self.name, run.teacher_key, run.data_key, unl.sha256 if unl is not None else None,
                             mode, views if mode == "cached" else None, cfg.augment, cfg.flips, cfg.mixup,
                             run.cfg.seed, *run.device_key(run.inp.teacher.device),
                             *(("answered by its OpenVINO fp32 conversion",) if by_file else ()))

    def summary(self, run: Run) -> str:
        pool, _, views, mode, _, by_file = self._plan(run)
        return (mode + (f", {views} views of {len(pool)} images" if mode == "cached" else "")
                + (", the teacher through OpenVINO fp32" if by_file else ""))

    def produce(self, run: Run, folder: Path) -> dict:
        from ..distill.source import build_signal

        pool, aug, views, mode, why, by_file = self._plan(run)
        with tempfile.TemporaryDirectory(prefix=".teacher-ov-", dir=folder) as scratch:
            teacher, answered = (file_teacher(run, Path(scratch)) if by_file
                                 else (run.inp.teacher.logits, {"answered_by": run.inp.teacher.format}))
            sig = build_signal(mode, pool, run.inp.data.val.images, teacher, aug, views=views,
                               seed=run.cfg.seed, folder=folder, why=why)
        np.savez(folder / "teacher_logits.npz", clean=sig.clean.numpy(), val=sig.val.numpy())
        return {**sig.info, "device": str(run.inp.teacher.device), **answered}

    def load(self, run: Run, entry) -> None:
        from ..distill.source import TeacherSignal, load_views

        pool, aug, _, mode, _, _ = self._plan(run)
        with np.load(entry.file("teacher_logits.npz"), allow_pickle=False) as z:
            clean, val = torch.from_numpy(z["clean"]), torch.from_numpy(z["val"])
        sig = TeacherSignal(mode, pool, val, clean, augmenter=aug, mean=aug.mean, std=aug.std, info=dict(entry.info))
        if mode == "online":
            sig.teacher = run.inp.teacher.logits
            if run.cfg.distill.feature_kd > 0:
                sig.feature_module = run.inp.teacher.live_module  # on the training device when it moved there
        elif mode == "cached":
            sig.attach_views(load_views(entry.path))
        run.signal = sig
        run.stages["teacher"] = dict(entry.info)


def answered_by_file(run: Run, answers: int, *, online: bool) -> bool:
    """Whether the teacher-signal stage asks a torch teacher through its OpenVINO fp32 conversion.

    Only a torch teacher on the CPU whose ``answers`` forward passes (clean pool, val, cached views)
    add up to FILE_TEACHER_MIN_MACS; online mode keeps the live module (it answers every batch later).
    """
    t = run.inp.teacher
    if online or t.module is None or t.device.type != "cpu":
        return False
    from ..models.stats import count_macs

    try:
        macs = count_macs(t.module, run.inp.example)
    except Exception:  # noqa: BLE001 - a graph the counter cannot trace: keep torch
        return False
    return answers * macs >= FILE_TEACHER_MIN_MACS


def file_teacher(run: Run, scratch: Path) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict]:
    """(the teacher's logits function, what answered): its OpenVINO fp32 conversion, written in ``scratch``
    and checked against the torch teacher on val images first; the torch teacher when the conversion fails
    or disagrees (report "teacher" says which, and why)."""
    from ..errors import EdgekdError
    from ..lower import get_backend
    from ..lower._base import predict_batched
    from ..lower.validate import check_agreement

    t, inp = run.inp.teacher, run.inp
    check = inp.data.val.images[:32]
    try:
        ov_be = get_backend("openvino")
        xml = ov_be.export_openvino(t.module, inp.example, scratch / "teacher-fp32.xml")
        runner = ov_be.OpenVINORunner(xml, inp.threads, "fp32")
        agreement = check_agreement("teacher (OpenVINO fp32)", t.logits(check).numpy(),
                                    predict_batched(runner, check.numpy()), precision="fp32", strict=False)
    except EdgekdError as exc:
        why = f"its OpenVINO fp32 conversion failed ({str(exc).splitlines()[0][:160]}): torch answered"
        run.log(f"teacher-signal: {why}")
        return t.logits, {"answered_by": t.format, "answered_by_why": why}
    if not agreement.ok:
        why = f"its OpenVINO fp32 conversion disagreed with it ({agreement.diff_text()}): torch answered"
        run.log(f"teacher-signal: {why}")
        return t.logits, {"answered_by": t.format, "answered_by_why": why, "agreement": agreement.to_dict()}

    def logits(images: torch.Tensor) -> torch.Tensor:
        n = int(images.shape[0])
        outs = [runner(images[s:s + FILE_TEACHER_BATCH].detach().to(torch.float32).contiguous().numpy())
                for s in range(0, n, FILE_TEACHER_BATCH)]
        return torch.from_numpy(np.concatenate([np.asarray(o, dtype=np.float32) for o in outs]))

    return logits, {"answered_by": "openvino-fp32", "agreement": agreement.to_dict(),
                    "answered_by_why": f"{FILE_TEACHER_MIN_MACS:.0e} MACs or more asked of a torch teacher on the "
                                       "CPU: its OpenVINO fp32 conversion, checked on 32 val images, is faster"}


class BaselinesStage(Stage):
    """The teacher as a user would deploy it without edgekd: torch, ONNX Runtime and OpenVINO fp32, OpenVINO INT8."""

    name = "baselines"

    def announce(self, run: Run) -> str:
        return "the teacher as deployed without edgekd (ONNX Runtime, OpenVINO fp32, OpenVINO INT8 PTQ)"

    def key(self, run: Run) -> str:
        return run.store.key(self.name, run.teacher_key, run.data_key, run.cfg.quant.calibration_samples,
                             run.cfg.seed)

    def summary(self, run: Run) -> str:
        return "teacher files"

    def produce(self, run: Run, folder: Path) -> dict:
        live = next((c for c in run.candidates if c.name == "teacher-torch-fp32"), None)
        return records(teacher_baselines(run, folder, live), folder)

    def execute(self, run: Run) -> None:
        live = teacher_torch_candidate(run)  # not a file: measured live, never cached
        if live is not None:
            run.candidates.append(live)
        super().execute(run)

    def load(self, run: Run, entry) -> None:
        run.candidates += run.file_candidates(entry, "baselines")


def teacher_torch_candidate(run: Run) -> Candidate | None:
    """The torch fp32 teacher (when the teacher is a torch model): the baseline every speed-up is against."""
    t, inp = run.inp.teacher, run.inp
    if t.module is None:
        return None
    from ..lower.torch import TorchRunner
    from ..models import count_macs, count_params

    tsize = size_on_disk(t.path) if t.path is not None and Path(t.path).is_file() else None
    return Candidate("teacher-torch-fp32", "teacher", "torch", "fp32", "baseline", TorchRunner(t.module, inp.threads),
                     t.path, tsize, count_params(t.module), count_macs(t.module, inp.example))


def teacher_baselines(run: Run, folder: Path, torch_teacher: Candidate | None) -> list[Candidate]:
    """The teacher's files, written into ``folder``; an ONNX teacher is used as it is, a torch
    teacher's ONNX export is checked against ``torch_teacher``."""
    from ..lower import get_backend
    from ..lower._base import predict_batched
    from ..lower.validate import check_agreement
    from ..quantize import calibration_subset

    inp, cfg = run.inp, run.cfg
    t, cands = inp.teacher, []
    onnx_be, ov_be = get_backend("onnxruntime"), get_backend("openvino")
    params, macs = (torch_teacher.params, torch_teacher.macs) if torch_teacher else (None, None)
    onnx_path = t.onnx_path
    if onnx_path is None:
        onnx_path = onnx_be.export_onnx(t.module, inp.example, folder / "teacher-fp32.onnx")
    check_x = inp.data.test.images.numpy()[:256]
    ort = onnx_be.OnnxRuntimeRunner(onnx_path, inp.threads, "fp32")
    ort_out = predict_batched(ort, check_x)  # the reference of every file below, predicted once
    c = Candidate("teacher-onnxruntime-fp32", "teacher", "onnxruntime", "fp32", "baseline", ort,
                  onnx_path, size_on_disk(onnx_path), params, macs, source=torch_teacher.name if torch_teacher else None)
    if torch_teacher:  # a torch teacher: its ONNX export must match it
        c.agreement = check_agreement(c.name, predict_batched(torch_teacher.runner, check_x), ort_out,
                                      precision="fp32")
    cands.append(c)
    ov_xml = ov_be.export_openvino(onnx_path, inp.example, folder / "teacher-fp32.xml")
    ov = Candidate("teacher-openvino-fp32", "teacher", "openvino", "fp32", "baseline",
                   ov_be.OpenVINORunner(ov_xml, inp.threads, "fp32"), ov_xml, size_on_disk(ov_xml),
                   params, macs, source="teacher-onnxruntime-fp32")
    ov.agreement = check_agreement(ov.name, ort_out, predict_batched(ov.runner, check_x),
                                   precision="fp32")  # checked like every exported file (robustness may run it)
    cands.append(ov)
    calib = calibration_subset(inp.data.train, cfg.quant.calibration_samples, cfg.seed).numpy()
    run.log(f"baseline: OpenVINO INT8 post-training quantization of the teacher ({len(calib)} calibration images)")
    int8_xml = ov_be.quantize_openvino_ptq(onnx_path, calib, folder / "teacher-int8.xml", subset_size=len(calib))
    int8 = Candidate("teacher-openvino-int8", "teacher", "openvino", "int8", "baseline",
                     ov_be.OpenVINORunner(int8_xml, inp.threads, "int8"), int8_xml, size_on_disk(int8_xml),
                     params, macs, source="teacher-onnxruntime-fp32")
    # PTQ is the user's "without edgekd" baseline, not edgekd's output: report its agreement, never fail on it
    int8.agreement = check_agreement(int8.name, ort_out, predict_batched(int8.runner, check_x),
                                     precision="int8", strict=False)
    cands.append(int8)
    return cands
