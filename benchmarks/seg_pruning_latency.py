"""Benchmark: what depth and channel pruning buy a U-Net student in latency (the segmentation prune default).

    python benchmarks/seg_pruning_latency.py [--student unet-efficientnet_b0] [--size 128] [--threads 2]

Seeded random weights (latency does not depend on them): the student as built; with half of its
removable blocks replaced by identities (every other one in network order: the real default removes
the least harmful ones, scored on val, so which blocks go may differ); and that model channel-pruned
with Torch-Pruning to 110, 80 and 60 M MACs. Each is exported to OpenVINO IR fp32 and quantized to
INT8 with NNCF PTQ (64 random calibration images), then timed at batch 1 with edgekd's adaptive
latency method, next to the torch fp32 U-Net ResNet-34 teacher, in one process. Prints one table.
"""
from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", default="unet-efficientnet_b0")
    ap.add_argument("--teacher-encoder", default="resnet34")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--macs", type=int, nargs="+", default=[110, 80, 60], help="channel-pruning targets, M MACs")
    args = ap.parse_args()

    import numpy as np
    import torch

    import edgekd.models  # noqa: F401  (torchvision shim before smp imports timm)
    from edgekd.lower.openvino import (
        export_openvino,
        open_runner,
        quantize_openvino_ptq,
    )
    from edgekd.lower.torch import TorchRunner
    from edgekd.measure.latency import measure_latency
    from edgekd.measure.machine import machine_info
    from edgekd.models.segmentation import create_seg_student, create_seg_teacher
    from edgekd.models.stats import count_macs
    from edgekd.prune.depth import removable_blocks, replace_with_identity
    from edgekd.prune.pruner import auto_depth
    from edgekd.prune.segmentation import prune_seg_to

    torch.manual_seed(0)
    x = torch.randn(1, 1, args.size, args.size)
    calib = np.random.default_rng(0).standard_normal((64, 1, args.size, args.size)).astype(np.float32)
    student = create_seg_student(args.student, 1, 2, seed=0).eval()
    depth = copy.deepcopy(student)
    names = removable_blocks(depth, x)
    for name in names[::2][:auto_depth(depth, x)]:
        replace_with_identity(depth, name)
    models = {"as built": student, f"half the blocks ({len(names) // 2} of {len(names)})": depth}
    for m in args.macs:
        models[f"blocks, then channels to {m} M MACs"] = prune_seg_to(depth, x, m * 10**6).model
    teacher = create_seg_teacher("Unet", args.teacher_encoder, 1, 2).eval()
    t = measure_latency(TorchRunner(teacher, args.threads), x.numpy(), threads=args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (what, model) in enumerate(models.items()):
            fp32 = export_openvino(model.eval(), x, Path(tmp) / f"m{i}.xml")
            int8 = quantize_openvino_ptq(fp32, calib, Path(tmp) / f"m{i}-int8.xml", subset_size=64)
            a = measure_latency(open_runner(fp32, threads=args.threads), x.numpy(), threads=args.threads)
            b = measure_latency(open_runner(int8, threads=args.threads, precision="int8"), x.numpy(),
                                threads=args.threads)
            rows.append((what, count_macs(model, x) / 1e6, a.p50, b.p50))
    m = machine_info(args.threads)
    print(f"machine: {m['cpu']}, {args.threads} threads; {args.student} at {args.size}×{args.size}, 1 channel, 2 "
          f"classes; teacher U-Net {args.teacher_encoder} torch fp32 p50 {t.p50:.1f} ms")
    print("| student | MACs | OpenVINO fp32 p50 ms | OpenVINO INT8 p50 ms | × faster than the torch fp32 teacher (INT8) |")
    print("|---|---|---|---|---|")
    for what, macs, a, b in rows:
        print(f"| {what} | {macs:.0f} M | {a:.2f} | {b:.2f} | {t.p50 / b:.1f} |")


if __name__ == "__main__":
    main()
