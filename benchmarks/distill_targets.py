"""Benchmark: the distillation issue's targets, with the DEFAULT options of `edgekd compress`.

    python benchmarks/distill_targets.py [--cases small retina full demo] [--out DIR]

Each case trains (once, cached in --out) a ResNet-18 teacher with the library's suite recipe,
then runs `compress` with no training, pruning or budget options, and prints one table:

  small   PneumoniaMNIST, train capped at 550 and val at 80 (stratified, seeded), test full,
          64×64, intel-cpu: shipped test AUC >= teacher - 0.01
  retina  RetinaMNIST (RGB, 5 classes) upsampled to 64×64, intel-cpu: shipped macro AUC >= teacher - 0.01
  full    PneumoniaMNIST 64×64 on intel-cpu and generic-cpu: shipped AUC >= teacher - 0.01, latency
          >= 30× lower than the torch fp32 teacher, file >= 20× smaller than its fp32 ONNX
  demo    the embedded demo for jetson-nano with the default budget (the README's first command)
  small-zoo  the small case with a fresh lcnet_100 instead of the default teacher-derived student
  small-unl  the small case plus the rest of the train split as --unlabelled images (labels removed)
  small-fkd  the small case with --feature-kd 1 (FitNets hints, teacher online)
  small-onnx the small case with the same teacher given as an ONNX file (a black-box teacher)
--teacher-arch and --seed train another teacher (another architecture, another seed) for any case.
and for every case the whole compress time (target: < 10 min on 2 cores at 64×64).
Data: $EDGEKD_PNEUMONIA / $EDGEKD_RETINA or ../shared/data/*.npz (never committed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
PNEUMONIA = Path(os.environ.get("EDGEKD_PNEUMONIA", SHARED / "pneumoniamnist.npz"))
RETINA = Path(os.environ.get("EDGEKD_RETINA", SHARED / "retinamnist.npz"))


def stratified_slice(src: Path, dst: Path, n_train: int, n_val: int, seed: int) -> Path:
    """train and val capped (stratified by class, seeded), test kept whole."""
    if dst.exists():
        return dst
    z, rng, out = np.load(src), np.random.default_rng(seed), {}
    for split, n in (("train", n_train), ("val", n_val)):
        y = z[f"{split}_labels"].reshape(-1)
        idx = np.concatenate([rng.choice(np.flatnonzero(y == c), max(1, round(n * (y == c).mean())), replace=False)
                              for c in np.unique(y)])
        idx.sort()
        out[f"{split}_images"], out[f"{split}_labels"] = z[f"{split}_images"][idx], z[f"{split}_labels"][idx]
    out["test_images"], out["test_labels"] = z["test_images"], z["test_labels"]
    dst.parent.mkdir(parents=True, exist_ok=True)
    np.savez(dst, **out)
    return dst


def rest_unlabelled(small: Path, out: Path) -> Path:
    """The rest of PneumoniaMNIST's train split (not in the small slice), labels removed."""
    dst = out / "pneumonia-rest-unlabelled.npz"
    if not dst.exists():
        kept = {a.tobytes() for a in np.load(small)["train_images"]}
        rest = [a for a in np.load(PNEUMONIA)["train_images"] if a.tobytes() not in kept]
        np.savez(dst, images=np.stack(rest))
    return dst


ARCH, SEED = "resnet18", 0  # --teacher-arch, --seed


def teacher(data: Path, out: Path, epochs: int, seed: int) -> Path:
    from edgekd.suites.run import train_teacher

    w = out / f"teacher-{ARCH}-{data.stem}-64-e{epochs}-s{seed}.safetensors"
    if not w.exists():
        train_teacher({"arch": ARCH, "image_size": 64, "mean": [0.5], "std": [0.5], "max_samples": None,
                       "seed": seed, "epochs": epochs, "lr": 3e-3, "batch_size": 64}, data, w)
    return w


def as_onnx(weights: Path, data: Path) -> Path:
    """The timm teacher exported to ONNX (legacy exporter, dynamic batch), as a user's black-box teacher."""
    import torch

    from edgekd.models import load_teacher

    dst = weights.with_suffix(".onnx")
    if not dst.exists():
        z = np.load(data)
        chans = 3 if z["train_images"].ndim == 4 else 1
        k = int(z["train_labels"].max()) + 1
        t = load_teacher(f"timm:{ARCH}", weights=weights, in_chans=chans, num_classes=k)
        torch.onnx.export(t.module.eval(), torch.zeros(1, chans, 64, 64), str(dst), dynamo=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
    return dst


def run(name: str, target: str, out: Path, data: Path | None, weights: Path | None, image_size: int | None,
        unlabelled: Path | None = None, onnx: Path | None = None, **distill: object) -> dict:
    from edgekd.api import compress
    from edgekd.config import CompressConfig, Preprocessing
    from edgekd.errors import NotShippedError

    tag = "" if (ARCH, SEED) == ("resnet18", 0) else f"-{ARCH}-s{SEED}"
    cfg = CompressConfig(target=target, out=out / "runs" / f"{name}-{target}{tag}", overwrite=True,
                         teacher=str(onnx) if onnx else f"timm:{ARCH}" if weights else None,
                         teacher_weights=None if onnx else weights, data=data,
                         cache_dir=out / "cache", preprocessing=Preprocessing(image_size=image_size),
                         unlabelled=unlabelled)
    for k, v in distill.items():  # only for the comparison cases; the target cases use the defaults
        setattr(cfg.distill, k, v)
    t0 = time.perf_counter()
    try:
        compress(cfg, log=lambda m: print(f"  [{name}/{target}] {m}", flush=True))
    except NotShippedError as exc:
        print(f"  [{name}/{target}] {exc}")
    seconds = time.perf_counter() - t0
    rep = json.loads((Path(cfg.out) / "report.json").read_text())
    by = {c["name"]: c for c in rep["candidates"]}
    t = by.get(rep["shipping"].get("teacher_candidate", "teacher-torch-fp32")) or by["teacher-onnxruntime-fp32"]
    s = by.get(rep["shipped"]) if rep["shipped"] else None
    sp = rep.get("speedups", {})
    return {"case": name, "target": target, "teacher_auc": t["metrics"]["auc"],
            "shipped": rep["shipped"], "auc": s["metrics"]["auc"] if s else None,
            "p50": (s.get("latency_ms") or {}).get("p50") if s else None,
            "vs_torch": sp.get("latency_vs_teacher-torch-fp32"), "vs_ov_int8": sp.get("latency_vs_teacher-openvino-int8"),
            "smaller": sp.get("size_vs_teacher-onnxruntime-fp32"), "seconds": seconds,
            "budget": rep["training"]["budget"]["distill_steps"], "mode": rep["training"]["teacher_mode"],
            "distilled_auc": by["student-distilled"]["metrics"]["auc"], "student": rep["stages"]["distill"]["student"], "reason": rep["shipping"].get("reason", "")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["small", "retina", "full", "demo"])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "distill")
    ap.add_argument("--seed", type=int, default=0, help="teacher seed")
    ap.add_argument("--teacher-arch", default="resnet18", help="timm architecture of the teacher")
    args = ap.parse_args()
    global ARCH, SEED
    ARCH, SEED = args.teacher_arch, args.seed
    from edgekd._compat import quiet_third_party

    quiet_third_party()
    os.environ.setdefault("EDGEKD_NO_PROGRESS", "1")
    rows = []
    print(f"teacher: {ARCH}, seed {args.seed}")
    for case in args.cases:
        if case == "small":
            d = stratified_slice(PNEUMONIA, args.out / "pneumonia-550.npz", 550, 80, 0)
            rows.append(run(case, "intel-cpu", args.out, d, teacher(d, args.out, 30, args.seed), 64))
        elif case == "small-onnx":  # a black-box teacher: the student is cut from it through onnx2torch
            d = stratified_slice(PNEUMONIA, args.out / "pneumonia-550.npz", 550, 80, 0)
            w = teacher(d, args.out, 30, args.seed)
            rows.append(run(case, "intel-cpu", args.out, d, w, 64, onnx=as_onnx(w, d)))
        elif case == "small-zoo":  # the comparison that chose the default start: a fresh zoo student
            d = stratified_slice(PNEUMONIA, args.out / "pneumonia-550.npz", 550, 80, 0)
            rows.append(run(case, "intel-cpu", args.out, d, teacher(d, args.out, 30, args.seed), 64, student="lcnet_100"))
        elif case in ("small-unl", "small-fkd"):  # what unlabelled images and feature hints buy on the small set
            d = stratified_slice(PNEUMONIA, args.out / "pneumonia-550.npz", 550, 80, 0)
            w = teacher(d, args.out, 30, args.seed)
            if case == "small-unl":
                rows.append(run(case, "intel-cpu", args.out, d, w, 64, unlabelled=rest_unlabelled(d, args.out)))
            else:
                rows.append(run(case, "intel-cpu", args.out, d, w, 64, feature_kd=1.0))
        elif case == "retina":
            rows.append(run(case, "intel-cpu", args.out, RETINA, teacher(RETINA, args.out, 20, args.seed), 64))
        elif case == "full":
            w = teacher(PNEUMONIA, args.out, 8, args.seed)
            for target in ("intel-cpu", "generic-cpu"):
                rows.append(run(case, target, args.out, PNEUMONIA, w, 64))
        elif case == "demo":
            rows.append(run(case, "jetson-nano", args.out, None, None, None))
        else:
            print(f"unknown case {case}", file=sys.stderr)
            return 2
    f = lambda v, p=4: "—" if v is None else (f"{v:.{p}f}" if isinstance(v, float) else str(v))  # noqa: E731
    print("\n| case | target | student | teacher AUC | distilled AUC | shipped | AUC | Δ | p50 ms | vs torch fp32 | vs OV INT8 | "
          "smaller vs ONNX | steps | teacher mode | compress s |")
    print("|" + "---|" * 15)
    for r in rows:
        delta = None if r["auc"] is None else r["auc"] - r["teacher_auc"]
        print(f"| {r['case']} | {r['target']} | {r['student']} | {f(r['teacher_auc'])} | {f(r['distilled_auc'])} | {r['shipped'] or 'nothing'} | "
              f"{f(r['auc'])} | {f(delta, 3)} | {f(r['p50'], 3)} | {f(r['vs_torch'], 1)} | {f(r['vs_ov_int8'], 1)} | "
              f"{f(r['smaller'], 1)} | {r['budget']} | {r['mode']} | {r['seconds']:.0f} |")
    for r in rows:
        if not r["shipped"]:
            print(f"{r['case']}/{r['target']}: {r['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
