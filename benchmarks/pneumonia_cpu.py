"""Benchmark: PneumoniaMNIST at 64×64, ResNet-18 teacher, `compress` for intel-cpu and generic-cpu.

    python benchmarks/pneumonia_cpu.py [--data PATH] [--teacher-weights W.safetensors] [--out DIR]

Trains the ResNet-18 teacher once (cached in --out) unless weights are given, runs the whole
pipeline per target, and prints one table with the issue's targets (measured in this one run,
on this machine):
  shipped AUC >= teacher AUC − 0.01; shipped p50 >= 30× faster than the torch fp32 teacher and
  >= 3× faster than the teacher's OpenVINO INT8 PTQ; shipped file >= 20× smaller than the
  teacher's fp32 ONNX; the whole compress under 15 minutes.
The student is lcnet_100 (the CPU targets' zoo student): --prune-depth (6) whole blocks removed,
then channels pruned to --prune-ratio (0.9) of the MACs removed in all (the suite's depth6-r90 setting).
Data: $EDGEKD_PNEUMONIA or ../shared/data/pneumoniamnist.npz (never committed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("EDGEKD_PNEUMONIA", REPO.parent / "shared" / "data" / "pneumoniamnist.npz"))


def train_teacher(data_path: Path, size: int, epochs: int, out: Path, seed: int) -> Path:
    """The cached ResNet-18 teacher (trained once; the suites train theirs with the same function)."""
    from edgekd.suites.run import train_teacher as train

    weights = out / f"teacher-resnet18-{size}-e{epochs}-s{seed}.safetensors"
    if weights.exists():
        print(f"teacher: reusing {weights}")
        return weights
    recipe = {"arch": "resnet18", "image_size": size, "mean": [0.5], "std": [0.5], "max_samples": None, "seed": seed,
              "epochs": epochs, "lr": 3e-3, "batch_size": 64}
    train(recipe, data_path, weights)
    return weights


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--teacher-weights", type=Path, default=None)
    ap.add_argument("--teacher-epochs", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--targets", nargs="+", default=["intel-cpu", "generic-cpu"])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prune-ratio", type=float, default=0.9, help="fraction of the student's MACs to remove")
    ap.add_argument("--prune-depth", type=int, default=6, help="whole blocks to remove before channel pruning")
    args = ap.parse_args()
    if not args.data.exists():
        print(f"error: {args.data} not found (set EDGEKD_PNEUMONIA or pass --data)", file=sys.stderr)
        return 2

    from edgekd._compat import quiet_third_party
    from edgekd.api import compress

    quiet_third_party()
    from edgekd.config import CompressConfig, Preprocessing, PruneConfig
    from edgekd.errors import NotShippedError

    weights = args.teacher_weights or train_teacher(args.data, args.image_size, args.teacher_epochs, args.out, args.seed)
    rows = []
    for target in args.targets:
        cfg = CompressConfig(target=target, out=args.out / target, teacher="timm:resnet18", teacher_weights=weights,
                             data=args.data, preprocessing=Preprocessing(image_size=args.image_size),
                             prune=PruneConfig(ratio=args.prune_ratio, depth=args.prune_depth), seed=args.seed, overwrite=True)
        cfg.distill.student = "lcnet_100"  # the hand-set depth/ratio were found for this zoo student
        t0 = time.perf_counter()
        try:
            rep = compress(cfg).report
        except NotShippedError as exc:
            print(f"{target}: {exc}")
            rep = json.loads((cfg.out / "report.json").read_text())
        rows.append((target, rep, time.perf_counter() - t0))

    by_name = lambda rep: {c["name"]: c for c in rep["candidates"]}  # noqa: E731
    print()
    print(f"machine: {rows[0][1]['machine']['cpu']}, {rows[0][1]['machine']['threads']} threads; "
          f"data {args.data.name} at {args.image_size}×{args.image_size}; medians of "
          f"{rows[0][1]['config']['bench']['iterations']} batch-1 runs")
    hdr = ("target", "shipped", "AUC teacher", "AUC shipped", "p50 ms", "vs torch fp32", "vs OV INT8 PTQ",
           "smaller vs ONNX fp32", "compress s", "all targets met")
    print(" | ".join(hdr))
    ok_all = True
    for target, rep, secs in rows:
        c = by_name(rep)
        teacher = c["teacher-torch-fp32"]
        s = c.get(rep["shipped"]) if rep["shipped"] else None
        if s is None:
            print(f"{target} | — | {teacher['metrics']['auc']:.4f} | — | — | — | — | — | {secs:.0f} | NO")
            ok_all = False
            continue
        sp = rep["speedups"]
        checks = [
            s["metrics"]["auc"] >= teacher["metrics"]["auc"] - 0.01,
            sp["latency_vs_teacher-torch-fp32"] >= 30,
            sp["latency_vs_teacher-openvino-int8"] >= 3,
            sp["size_vs_teacher-onnxruntime-fp32"] >= 20,
            secs < 15 * 60,
        ]
        ok_all &= all(checks)
        print(f"{target} | {s['name']} | {teacher['metrics']['auc']:.4f} | {s['metrics']['auc']:.4f} | "
              f"{s['latency_ms']['p50']:.3f} | {sp['latency_vs_teacher-torch-fp32']:.1f}× | "
              f"{sp['latency_vs_teacher-openvino-int8']:.1f}× | {sp['size_vs_teacher-onnxruntime-fp32']:.1f}× | "
              f"{secs:.0f} | {'yes' if all(checks) else 'NO ' + str(checks)}")
    print()
    for target, rep, _ in rows:
        print(f"--- {target}: all candidates (test split) ---")
        for c in rep["candidates"]:
            m, lat = c["metrics"], c["latency_ms"]
            p50 = f"{lat['p50']:.3f} ms" if lat else "  (not timed)"
            print(f"{c['name']:<28} {c['backend']:<12} {c['precision']:<5} AUC {m['auc']:.4f} sens {m['sensitivity']:.3f} "
                  f"spec {m['specificity']:.3f} p50 {p50} size {c['size_bytes'] or 0:>10} B")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
