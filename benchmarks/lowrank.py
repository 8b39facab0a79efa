"""Benchmark: does low-rank factorization make a student faster on the CPU? MACs and latency before/after.

    python benchmarks/lowrank.py [--data PATH] [--energies 0.95,0.9,0.8] [--epochs 2] [--train-samples 1000]
        [--rounds 5] [--threads 2] [--out build/bench-lowrank]

PneumoniaMNIST at 64×64 (``--image-size``). The models are the default student of the intel-cpu and
generic-cpu profiles (lcnet_100), the student the pipeline cuts from a ResNet-18 teacher
(``--student from-teacher``: edgekd.prune.derived.derive_student, to lcnet_100's MACs) and the
ResNet-18 itself. Each is first trained briefly (``--epochs`` of cross-entropy on
``--train-samples`` stratified images; 0 = random init): a factorization's ranks depend on the
singular spectra of trained weights, which random weights do not have. Every model is then
factorized at each energy (edgekd.lowrank.factorize, ranks multiples of 8, layers that would not
get cheaper left alone), exported to ONNX and timed in ONNX Runtime (generic-cpu) and OpenVINO
fp32 (intel-cpu): batch 1, ``--threads`` threads, the median over ``--rounds`` interleaved rounds of
200 calls each, all in this one process. Also printed: the factorized model's val AUC and its
prediction agreement with the unfactorized one *before any fine-tuning* (the pipeline would
fine-tune by distillation). Data: $EDGEKD_PNEUMONIA or ../shared/data/pneumoniamnist.npz.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
DEFAULT_DATA = Path(os.environ.get("EDGEKD_PNEUMONIA", REPO.parent / "shared" / "data" / "pneumoniamnist.npz"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--energies", default="0.95,0.9,0.8")
    ap.add_argument("--epochs", type=int, default=2, help="cross-entropy epochs before factorizing (0: random init)")
    ap.add_argument("--train-samples", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds (median reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "build" / "bench-lowrank")
    args = ap.parse_args()
    if not args.data.exists():
        print(f"error: {args.data} not found (set EDGEKD_PNEUMONIA or pass --data)", file=sys.stderr)
        return 2

    import warnings

    warnings.filterwarnings("ignore")
    import numpy as np
    import torch
    from derived_student import stratified

    import edgekd  # noqa: F401  (before timm)
    from edgekd._compat import import_timm, quiet_third_party
    from edgekd.config import Preprocessing
    from edgekd.data import Split, load_dataset
    from edgekd.distill.trainer import predict_logits
    from edgekd.lower.onnx import export_onnx
    from edgekd.lower.onnx import open_runner as ort_runner
    from edgekd.lower.openvino import open_runner as ov_runner
    from edgekd.lowrank import LowRankConfig, factorize, layer_count
    from edgekd.measure.latency import measure_latency
    from edgekd.measure.machine import machine_info, machine_summary
    from edgekd.metrics.classification import roc_auc
    from edgekd.models import (
        count_macs,
        count_params,
        create_student,
        load_teacher,
        save_weights,
        train_classifier,
    )
    from edgekd.prune.derived import derive_student

    quiet_third_party()
    torch.set_num_threads(args.threads)
    energies = [float(e) for e in args.energies.split(",") if e]
    data = load_dataset(args.data, Preprocessing(image_size=args.image_size))
    train = stratified(data.train, args.train_samples, args.seed)
    val = data.val
    example = val.images[:1]
    args.out.mkdir(parents=True, exist_ok=True)

    def trained(name: str) -> torch.nn.Module:
        """``name`` trained for --epochs on the slice (cached in --out), in eval mode."""
        torch.manual_seed(args.seed)
        model = import_timm().create_model(name, pretrained=False, in_chans=data.channels, num_classes=data.num_classes)
        if args.epochs == 0:
            return model.eval()
        path = args.out / f"{name}-{args.image_size}-n{len(train)}-e{args.epochs}-s{args.seed}.safetensors"
        if path.exists():
            from safetensors.torch import load_file

            model.load_state_dict(load_file(path))
        else:
            t0 = time.perf_counter()
            res = train_classifier(model, train, Split(val.images, val.labels), epochs=args.epochs, seed=args.seed,
                                   desc=f"train {name}")
            save_weights(model, path)
            print(f"trained {name}: val AUC {res['best_val_auc']:.4f} in {time.perf_counter() - t0:.0f} s")
        return model.eval()

    bases: dict[str, torch.nn.Module] = {"lcnet_100 (intel-cpu, generic-cpu default)": trained("lcnet_100")}
    teacher_model = trained("resnet18")
    teacher_path = args.out / f"resnet18-{args.image_size}-n{len(train)}-e{args.epochs}-s{args.seed}.safetensors"
    if args.epochs > 0:
        teacher = load_teacher("timm:resnet18", weights=teacher_path, in_chans=data.channels,
                               num_classes=data.num_classes)
        n = min(len(val), 512)
        cut = derive_student(teacher, example=example, val_images=val.images[:n],
                             val_teacher_logits=teacher.logits(val.images[:n]), train_images=train.images)
        bases["from-teacher (ResNet-18 cut to lcnet_100 MACs)"] = cut.model.eval()
    else:
        bases["from-teacher (ResNet-18 cut)"] = create_student("resnet18", data.channels, data.num_classes).eval()
    bases["resnet18 (the teacher)"] = teacher_model

    variants: list[dict] = []
    for base_name, base in bases.items():
        base_val = predict_logits(base, val.images)
        for energy in [None, *energies]:
            if energy is None:
                model, rec = base, None
            else:
                t0 = time.perf_counter()
                res = factorize(base, example, LowRankConfig(energy=energy))
                model, rec = res.model, res.record
                print(f"{base_name} energy {energy}: {len(rec['layers'])} layers factorized, {len(rec['skipped'])} "
                      f"left, in {time.perf_counter() - t0:.1f} s")
            logits = predict_logits(model, val.images)
            variants.append({
                "model": base_name, "energy": energy, "module": model,
                "factorized": len(rec["layers"]) if rec else 0, "macs": count_macs(model, example),
                "params": count_params(model), "layers": layer_count(model),
                "val_auc": roc_auc(logits.numpy(), val.labels.numpy()),
                "agreement": float((logits.argmax(1) == base_val.argmax(1)).float().mean()),
            })

    runners = []
    for i, v in enumerate(variants):
        path = export_onnx(v["module"].eval(), example, args.out / f"v{i}.onnx")
        runners.append({"ort": ort_runner(path, threads=args.threads), "ov": ov_runner(path, threads=args.threads)})
    x = example.numpy()
    p50: dict[tuple[int, str], list[float]] = {(i, b): [] for i in range(len(variants)) for b in ("ort", "ov")}
    for _ in range(args.rounds):
        for i, rs in enumerate(runners):
            for b, r in rs.items():
                p50[(i, b)].append(measure_latency(r, x, warmup=20, iterations=200, threads=args.threads).p50)
    med = {k: float(np.median(v)) for k, v in p50.items()}

    info = machine_info(args.threads)
    print(f"\nmachine: {machine_summary(info)}; load average {info['loadavg']}; {args.image_size}×{args.image_size}, "
          f"batch 1, median of {args.rounds} interleaved rounds × 200 calls; weights: "
          + (f"{args.epochs} epochs on {len(train)} train images" if args.epochs else "random init"))
    print("| model | energy | layers factorized | MACs | params | conv+linear layers | ORT fp32 p50 ms | "
          "OpenVINO fp32 p50 ms | val AUC (no fine-tune) | agreement with unfactorized |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for i, v in enumerate(variants):
        base = next(j for j, w in enumerate(variants) if w["model"] == v["model"] and w["energy"] is None)
        ort, ov = (_cell(med, i, base, b) for b in ("ort", "ov"))
        print(f"| {v['model']} | {'-' if v['energy'] is None else v['energy']} | {v['factorized']} | "
              f"{v['macs'] / 1e6:.2f} M | {v['params'] / 1e6:.3f} M | {v['layers']} | {ort} | {ov} | "
              f"{v['val_auc']:.4f} | {v['agreement']:.3f} |")
    return 0


def _cell(med: dict, i: int, base: int, backend: str) -> str:
    """The p50 of variant ``i``, and its ratio to the unfactorized model's."""
    ms = med[(i, backend)]
    return f"{ms:.3f}" + ("" if i == base else f" ({ms / med[(base, backend)]:.2f}×)")


if __name__ == "__main__":
    raise SystemExit(main())
