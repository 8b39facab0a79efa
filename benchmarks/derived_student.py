"""Benchmark: a student derived from the teacher (--student from-teacher) vs a fresh lcnet_100.

    python benchmarks/derived_student.py --teacher-weights W.safetensors [--data PATH] [--epochs 30]
        [--full-epochs 0] [--rounds 5]

PneumoniaMNIST at 64×64, a timm ResNet-18 teacher (weights given; train one with
benchmarks/pneumonia_cpu.py or edgekd.suites.run.train_teacher). Both students are distilled
with the current ``edgekd.distill.distill`` for the same fixed number of epochs (no early stopping:
patience > epochs), on a small-data slice (train 550 stratified, val 80) and, with --full-epochs N,
on the full train split. Prints one table: start and final val AUC, test AUC, agreement with the
teacher at the start, MACs, params, and ORT / OpenVINO fp32 batch-1 p50 latency at 2 threads
(median over --rounds interleaved rounds of 200 calls each, all in this one run).
Data: $EDGEKD_PNEUMONIA or ../shared/data/pneumoniamnist.npz (never committed).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("EDGEKD_PNEUMONIA", REPO.parent / "shared" / "data" / "pneumoniamnist.npz"))


def stratified(split, n: int, seed: int):
    """At most ``n`` samples with the split's class proportions (seeded)."""
    import torch

    from edgekd.data import Split

    if n >= len(split):
        return split
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in split.labels.unique():
        idx = (split.labels == c).nonzero().flatten()
        k = max(1, round(n * len(idx) / len(split)))
        picks.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    idx = torch.cat(picks).sort().values[:n]
    return Split(split.images[idx], split.labels[idx])


def agreement(a, b) -> float:
    return float((a.argmax(1) == b.argmax(1)).float().mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--teacher-weights", type=Path, required=True)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=30, help="distillation epochs on the small slice")
    ap.add_argument("--full-epochs", type=int, default=0, help="distillation epochs on the full train split (0: skip)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds (median reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not args.data.exists():
        print(f"error: {args.data} not found (set EDGEKD_PNEUMONIA or pass --data)", file=sys.stderr)
        return 2

    import warnings

    warnings.filterwarnings("ignore")
    import numpy as np
    import torch

    from edgekd._compat import quiet_third_party
    from edgekd.config import DistillConfig, Preprocessing
    from edgekd.data import Dataset, load_dataset
    from edgekd.distill import TeacherLogits, distill
    from edgekd.distill.trainer import predict_logits
    from edgekd.lower.onnx import export_onnx
    from edgekd.lower.onnx import open_runner as ort_runner
    from edgekd.lower.openvino import open_runner as ov_runner
    from edgekd.measure.latency import measure_latency
    from edgekd.metrics.classification import roc_auc
    from edgekd.models import count_macs, count_params, create_student, load_teacher
    from edgekd.prune.derived import derive_student

    quiet_third_party()
    torch.set_num_threads(2)
    data = load_dataset(args.data, Preprocessing(image_size=args.image_size))
    teacher = load_teacher("timm:resnet18", weights=args.teacher_weights, in_chans=data.channels,
                           num_classes=data.num_classes)
    example = data.val.images[:1]
    test_auc = lambda m: roc_auc(predict_logits(m, data.test.images).numpy(), data.test.labels.numpy())  # noqa: E731
    t_test = teacher.logits(data.test.images)
    print(f"teacher resnet18: test AUC {roc_auc(t_test.numpy(), data.test.labels.numpy()):.4f}, "
          f"MACs {count_macs(teacher.module, example) / 1e6:.1f} M")

    settings = [("small (train 550, val 80)", stratified(data.train, 550, args.seed), stratified(data.val, 80, args.seed),
                 args.epochs)]
    if args.full_epochs > 0:
        settings.append((f"full (train {len(data.train)}, val {len(data.val)})", data.train, data.val, args.full_epochs))

    rows, lat_models = [], {}
    for label, train, val, epochs in settings:
        ds = Dataset(train, val, data.test, data.num_classes, data.channels, data.image_size, data.class_names,
                     data.format, data.preprocessing)
        tl = TeacherLogits(teacher.logits(train.images), teacher.logits(val.images))
        cfg = DistillConfig()
        cfg.epochs = epochs  # the current trainer reads cfg.epochs; passed explicitly as well
        t0 = time.perf_counter()
        derived = derive_student(teacher, example=example, val_images=val.images, val_teacher_logits=tl.val,
                                 train_images=train.images)
        derive_s = time.perf_counter() - t0
        rec = derived.record
        print(f"[{label}] derived in {derive_s:.0f} s: removed {rec['removed_blocks']}, channel ratio "
              f"{rec['channel_ratio']}, MACs {rec['macs'] / 1e6:.2f} M (target {rec['macs_target'] / 1e6:.2f} M)")
        students = {"from-teacher (resnet18 cut)": derived.model,
                    "lcnet_100 (fresh)": create_student("lcnet_100", data.channels, data.num_classes, seed=args.seed)}
        for name, model in students.items():
            start_test = predict_logits(model, data.test.images)
            agree = agreement(start_test, t_test)
            t0 = time.perf_counter()
            res = distill(model, ds, tl, cfg, epochs=epochs, patience=epochs + 1, seed=args.seed, desc=name)
            rows.append((label, name, res.initial_val_auc, agree, res.best_val_auc, test_auc(res.model),
                         count_macs(res.model, example), count_params(res.model), time.perf_counter() - t0))
            print("  ", rows[-1])
            lat_models.setdefault(name, res.model)
        if label.startswith("small"):
            channels_only = derive_student(teacher, example=example, val_images=val.images,
                                           val_teacher_logits=tl.val, train_images=train.images, depth=0).model
            lat_models["from-teacher, channels only (depth 0)"] = channels_only

    # latency: every model exported to ONNX, timed in interleaved rounds in this one run
    tmp = Path(tempfile.mkdtemp())
    lat_models = {"teacher resnet18": teacher.module, **lat_models}
    runners = {}
    for i, (name, model) in enumerate(lat_models.items()):
        path = export_onnx(model.eval(), example, tmp / f"m{i}.onnx")
        runners[name] = {"ort": ort_runner(path, threads=args.threads), "ov": ov_runner(path, threads=args.threads)}
    x = example.numpy()
    p50 = {(n, b): [] for n in runners for b in ("ort", "ov")}
    for _ in range(args.rounds):
        for name, rs in runners.items():
            for b, r in rs.items():
                p50[(name, b)].append(measure_latency(r, x, warmup=20, iterations=200, threads=args.threads).p50)
    med = {k: float(np.median(v)) for k, v in p50.items()}

    print("\n| data | student | val AUC start | agreement with teacher at start (test) | val AUC | test AUC | MACs | params | train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, name, a0, ag, va, ta, macs, params, secs in rows:
        print(f"| {label} | {name} | {a0:.4f} | {ag:.3f} | {va:.4f} | {ta:.4f} | {macs / 1e6:.2f} M | {params / 1e6:.2f} M | {secs:.0f} |")
    print(f"\n| model | MACs | ORT fp32 p50 ms | OpenVINO fp32 p50 ms |  (batch 1, {args.threads} threads, median of "
          f"{args.rounds} rounds × 200 calls)")
    print("|---|---|---|---|")
    for name, model in lat_models.items():
        print(f"| {name} | {count_macs(model, example) / 1e6:.2f} M | {med[(name, 'ort')]:.3f} | {med[(name, 'ov')]:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
