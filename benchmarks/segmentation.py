"""Benchmark: the segmentation issue's targets, with the DEFAULT options of `edgekd compress --task segmentation`.

    python benchmarks/segmentation.py [--target intel-cpu] [--seed 0] [--teacher-encoder resnet34] [--out DIR]

On the SYNTHETIC ultrasound set at 128×128 (800/200/200 images, edgekd.data.synthetic_us) with a
U-Net teacher (ResNet-34 encoder by default; trained once with the demo's recipe and cached in
$EDGEKD_CACHE, its training time printed separately), `compress` runs with no budget, training or
pruning options. Targets (issue 10): shipped test Dice >= teacher - 0.01, batch-1 latency >= 10×
lower than the torch fp32 teacher on intel-cpu, the whole compress run under 15 minutes on 2 cores.
--teacher-encoder / --seed train another teacher (another encoder, another seed) to check the
defaults do not fit one teacher only. Prints one table; the figures come from the run's report.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def teacher_weights(encoder: str, seed: int, out: Path) -> tuple[str, Path, float]:
    """(spec, weights, seconds spent training now: 0 when cached) of the U-Net teacher on the synthetic set."""
    import torch

    import edgekd.models  # noqa: F401  (torchvision shim before smp imports timm)
    from edgekd.config import Preprocessing
    from edgekd.data.synthetic_us import load_synthetic_ultrasound
    from edgekd.demo import SEG_DEMO_STEPS, train_seg_teacher
    from edgekd.models import save_weights
    from edgekd.models.segmentation import create_seg_teacher

    path = out / f"teacher-unet-{encoder}-seed{seed}.safetensors"
    spec = f"smp:Unet:{encoder}"
    if path.exists():
        return spec, path, 0.0
    data = load_synthetic_ultrasound(Preprocessing(), seed=seed)
    torch.manual_seed(seed)
    model = create_seg_teacher("Unet", encoder, 1, 2)
    t0 = time.perf_counter()
    dice = train_seg_teacher(model, data, steps=SEG_DEMO_STEPS, seed=seed)
    seconds = time.perf_counter() - t0
    print(f"teacher {spec} seed {seed}: val Dice {dice:.4f} after {SEG_DEMO_STEPS} steps in {seconds:.0f} s",
          file=sys.stderr)
    save_weights(model, path)
    return spec, path, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="intel-cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--teacher-encoder", default="resnet34")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "segmentation")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse finished stages from --out's stage cache (the compress time is then NOT the whole run's)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import numpy as np

    from edgekd.api import compress
    from edgekd.config import CompressConfig
    from edgekd.data.synthetic_us import synthetic_ultrasound_splits
    from edgekd.errors import NotShippedError
    from edgekd.measure.machine import machine_info

    npz = args.out / f"synthetic-us-128-seed{args.seed}.npz"
    if not npz.exists():
        splits = synthetic_ultrasound_splits(800, 200, 200, size=128, seed=args.seed)
        np.savez(npz, **{f"{s}_images": im for s, (im, _) in splits.items()},
                 **{f"{s}_masks": m for s, (_, m) in splits.items()})
    spec, weights, train_s = teacher_weights(args.teacher_encoder, args.seed, args.out)
    run = args.out / f"run-{args.target}-{args.teacher_encoder}-seed{args.seed}"
    cfg = CompressConfig(task="segmentation", target=args.target, teacher=spec, teacher_weights=weights, data=npz,
                         out=run, overwrite=True, force=not args.reuse, seed=args.seed, cache_dir=args.out / "cache")
    t0 = time.perf_counter()
    try:
        compress(cfg, log=lambda m: print(m, file=sys.stderr))
    except NotShippedError as exc:
        print(f"not shipped: {exc}", file=sys.stderr)
    seconds = time.perf_counter() - t0
    report = json.loads((run / "report.json").read_text())
    by = {c["name"]: c for c in report["candidates"]}
    teacher, shipped = by[report["shipping"]["teacher_candidate"]], by.get(report.get("shipped") or "")
    sp = report.get("speedups", {})
    m = machine_info(2)
    print(f"machine: {m['cpu']}, {m['threads']} threads; target {args.target}; teacher {spec} seed {args.seed} "
          f"(training {train_s:.0f} s, 0 = cached)" + ("; stages reused: compress s is not the whole run" if args.reuse else ""))
    print("| teacher test Dice | shipped | shipped test Dice | Δ (paired 95 % CI) | shipped p50 ms | teacher torch "
          "p50 ms | × faster than torch fp32 teacher | × smaller than teacher ONNX | compress s |")
    print("|---|---|---|---|---|---|---|---|---|")
    if shipped is None:
        print(f"| {teacher['metrics']['dice']:.4f} | nothing: {report['shipping']['reason']} | | | | "
              f"{(teacher.get('latency_ms') or {}).get('p50', float('nan')):.2f} | | | {seconds:.0f} |")
        return
    vs = shipped["metrics"]["vs_teacher"] or {}
    ci = vs.get("ci") or [float("nan"), float("nan")]
    print(f"| {teacher['metrics']['dice']:.4f} | {shipped['name']} | {shipped['metrics']['dice']:.4f} | "
          f"{vs.get('dice_diff', float('nan')):+.4f} ({ci[0]:+.4f} … {ci[1]:+.4f}) | "
          f"{shipped['latency_ms']['p50']:.3f} | {teacher['latency_ms']['p50']:.2f} | "
          f"{sp.get('latency_vs_teacher-torch-fp32', float('nan')):.1f} | "
          f"{sp.get('size_vs_teacher-onnxruntime-fp32', float('nan')):.0f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
