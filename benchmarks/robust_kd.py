"""Benchmark: does consistent augmented distillation make students more robust under acquisition shift than plain KD?

    python benchmarks/robust_kd.py [--data full|small] [--max-steps N] [--cases fm plain] [--out DIR]

Two `compress` runs on PneumoniaMNIST at 64×64 for intel-cpu that differ in one thing, the
distillation views (the same in every training stage: distill, prune fine-tunes, recovery, QAT):

  fm     the defaults: consistent augmented distillation ("function matching"): `augment="medical"`,
         mixup 0.5, the teacher scoring exactly the view the student sees
  plain  plain KD: `augment="none"`, `mixup=0`: the clean images and the teacher's logits on them

Everything else is the default and the seed is the same; robustness under shift is on by default
(`bench.robust_images` = 512: val and test, a seeded subset of a larger split). Both runs share one
stage cache, so the teacher's baselines are measured once. The teacher is a timm ResNet-18 trained
by the suite recipe (`edgekd.suites.run.train_teacher`, lr 3e-3, batch 64), cached in --out:
8 epochs on the full train split (`--data full`) or 30 on a stratified 550 / 80 slice (`--data small`).

After each run the teacher (through its ONNX Runtime fp32 file, as the robustness step scores it) and
the shipped student predict the same images clean and under the 24 shifts once more, and a paired
bootstrap over images gives 95 % intervals for student − teacher mean drop and fm − plain.
Prints the tables (and writes them to <out>/results.md); progress goes to stdout.
Data: $EDGEKD_PNEUMONIA or ../shared/data/pneumoniamnist.npz (never committed).
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
sys.path.insert(0, str(REPO / "benchmarks"))
PNEUMONIA = Path(os.environ.get("EDGEKD_PNEUMONIA", REPO.parent / "shared" / "data" / "pneumoniamnist.npz"))
CASES = {"fm": ("defaults: augment medical, mixup 0.5 (function matching)", {}),
         "plain": ("plain KD: augment none, mixup 0", {"augment": "none", "mixup": 0.0})}
FAMILIES = {"noise": "gaussian-noise", "speckle": "speckle", "blur": "gaussian-blur", "contrast": "contrast",
            "gamma": "gamma", "jpeg": "jpeg", "rotation": "rotation", "translation": "translation"}


def teacher(data: Path, out: Path, epochs: int, seed: int) -> Path:
    from edgekd.suites.run import train_teacher

    w = out / f"teacher-resnet18-{data.stem}-64-e{epochs}-s{seed}.safetensors"
    if not w.exists():
        train_teacher({"arch": "resnet18", "image_size": 64, "mean": [0.5], "std": [0.5], "max_samples": None,
                       "seed": seed, "epochs": epochs, "lr": 3e-3, "batch_size": 64}, data, w)
    return w


def predictions(res, cfg, data: Path) -> dict[str, dict[str, np.ndarray]]:
    """P(pneumonia) of the teacher and the shipped student per split: (1 + 24 shifts) × N, and the labels."""
    from edgekd.data import load_dataset
    from edgekd.lower._base import predict_batched
    from edgekd.metrics.classification import softmax
    from edgekd.robust import DEFAULT_SHIFTS, shifted
    from edgekd.robust.candidates import runner_for
    from edgekd.robust.evaluate import subset

    by = {c.name: c for c in res.candidates}
    t = by[res.report["shipping"]["teacher_candidate"]]
    runners = {"teacher": runner_for(t, res.candidates), "student": res.shipped.runner}
    pre = cfg.preprocessing
    ds = load_dataset(data, pre, max_samples=cfg.max_samples, seed=cfg.seed)
    out = {}
    for split in ("val", "test"):
        s = getattr(ds, split)
        x, y = s.images.numpy().astype(np.float32), s.labels.numpy().reshape(-1)
        idx = subset(len(x), cfg.bench.robust_images, cfg.seed)
        x, y = x[idx], y[idx]
        views = [x] + [shifted(x, sh, cfg.seed, mean=ds.preprocessing.mean, std=ds.preprocessing.std)
                       for sh in DEFAULT_SHIFTS]
        out[split] = {"labels": y}
        for name, r in runners.items():
            out[split][name] = np.stack([softmax(predict_batched(r, v, batch_size=128).astype(np.float64))[:, 1]
                                         for v in views])
    return out


def _auc_rows(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AUC of each row of p (V×N) against binary y (Mann–Whitney with midranks)."""
    from scipy.stats import rankdata

    r = rankdata(p, axis=1)
    pos = y == 1
    n1, n0 = pos.sum(), (~pos).sum()
    return (r[:, pos].sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def mean_drop(p: np.ndarray, y: np.ndarray) -> float:
    a = _auc_rows(p, y)
    return float(np.mean(a[0] - a[1:]))


def paired_ci(pairs: list[tuple[np.ndarray, np.ndarray]], y: np.ndarray, resamples: int, seed: int):
    """Point estimate and 95 % percentile interval of the sum over ``pairs`` of mean_drop(a) − mean_drop(b)
    (b None: 0), the same resampled images for every term."""
    def stat(idx):
        return sum(mean_drop(a[:, idx], y[idx]) - (0.0 if b is None else mean_drop(b[:, idx], y[idx])) for a, b in pairs)

    rng = np.random.default_rng(seed)
    n, est, boots = len(y), stat(np.arange(len(y))), []
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        if 0 < y[idx].sum() < n:
            boots.append(stat(idx))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return est, float(lo), float(hi)


def run(case: str, out: Path, data: Path, weights: Path, max_steps: int | None, seed: int,
        max_samples: int | None = None) -> dict:
    from edgekd.api import compress
    from edgekd.config import CompressConfig, Preprocessing
    from edgekd.errors import NotShippedError

    cfg = CompressConfig(target="intel-cpu", out=out / "runs" / case, overwrite=True, teacher="timm:resnet18",
                         teacher_weights=weights, data=data, cache_dir=out / "cache", seed=seed, max_samples=max_samples,
                         preprocessing=Preprocessing(image_size=64))
    cfg.distill.max_steps = max_steps
    for k, v in CASES[case][1].items():
        setattr(cfg.distill, k, v)
    t0 = time.perf_counter()
    res = None
    try:
        res = compress(cfg, log=lambda m: print(f"  [{case}] {m}", flush=True))
    except NotShippedError as exc:
        print(f"  [{case}] {exc}", flush=True)
    seconds = time.perf_counter() - t0
    rep = json.loads((Path(cfg.out) / "report.json").read_text())
    rob = rep["robustness"]
    tname, sname = rob["teacher"], rob["shown"]
    by = {c["name"]: c for c in rep["candidates"]}
    row = {"case": case, "seconds": seconds, "shipped": rep["shipped"], "shown": sname, "teacher": tname,
           "teacher_auc": by[tname]["metrics"]["auc"], "auc": by[sname]["metrics"]["auc"] if sname else None,
           "steps": rep["training"]["budget"]["distill_steps"], "mode": rep["training"]["teacher_mode"],
           "images": rob["images"], "robust_seconds": rob["seconds"], "rob": rob["candidates"]}
    row["preds"] = None
    if res is not None and res.shipped is not None:
        try:
            p = predictions(res, cfg, data)
            np.savez(out / f"preds-{case}.npz", **{f"{s}_{k}": v for s, d in p.items() for k, v in d.items()})
            row["preds"] = p
        except Exception as exc:  # the tables above stand without the intervals
            print(f"  [{case}] paired predictions failed: {type(exc).__name__}: {exc}", flush=True)
    print(f"  [{case}] done in {seconds:.0f} s", flush=True)
    return row


def family_drops(r: dict) -> dict[str, float]:
    scores = r["scores"]
    return {fam: float(np.mean([s["drop"] for s in scores if s["shift"] == name])) for fam, name in FAMILIES.items()}


def tables(rows: list[dict], resamples: int, seed: int, note: str) -> list[str]:
    f = lambda v, p="+.4f": "—" if v is None else format(v, p)  # noqa: E731
    ci = lambda e: f"{e[0]:+.4f} ({e[1]:+.4f} … {e[2]:+.4f})"  # noqa: E731
    L = [note, "", "| case | distillation views | steps | teacher mode | shipped | teacher clean test AUC | "
         "shipped clean test AUC | teacher mean drop val / test | shipped mean drop val / test | "
         "worst shift on test (drop) | compress s |",
         "|" + "---|" * 11]
    for r in rows:
        t, s = r["rob"][r["teacher"]], r["rob"].get(r["shown"] or "", {})
        worst = s.get("test", {}).get("worst")
        wd = next((x["drop"] for x in s.get("test", {}).get("scores", [])
                   if f"{x['shift']}@{x['severity']}" == worst), None)
        L.append(f"| {r['case']} | {CASES[r['case']][0]} | {r['steps']} | {r['mode']} | {r['shipped'] or 'nothing (shown: ' + str(r['shown']) + ')'} | "
                 f"{r['teacher_auc']:.4f} | {f(r['auc'], '.4f')} | {t['val']['mean_drop']:+.4f} / {t['test']['mean_drop']:+.4f} | "
                 f"{f(s.get('val', {}).get('mean_drop'))} / {f(s.get('test', {}).get('mean_drop'))} | "
                 f"{worst} ({f(wd)}) | {r['seconds']:.0f} |")
    L += ["", "Mean AUC drop per shift family on test (mean of the three severities; drop = clean − shifted):", "",
          "| family | teacher | " + " | ".join(f"{r['case']} student ({r['shown']})" for r in rows) + " |",
          "|" + "---|" * (2 + len(rows))]
    t_fam = family_drops(rows[0]["rob"][rows[0]["teacher"]]["test"])
    s_fam = [family_drops(r["rob"][r["shown"]]["test"]) for r in rows]
    for fam in FAMILIES:
        L.append(f"| {fam} | {t_fam[fam]:+.4f} | " + " | ".join(f"{d[fam]:+.4f}" for d in s_fam) + " |")
    L.append(f"| all 24 | {np.mean(list(t_fam.values())):+.4f} | "
             + " | ".join(f"{np.mean(list(d.values())):+.4f}" for d in s_fam) + " |")
    done = {r["case"]: r["preds"] for r in rows if r["preds"]}
    if done:
        names = list(done)
        L += ["", f"Paired bootstrap over images ({resamples} resamples, seed {seed}; the same resampled images for "
              "every model): mean AUC drop over the 24 shifts, 95 % CI:", "",
              "| split | images | teacher mean drop | " + " | ".join(f"{c} student − teacher" for c in names)
              + (" | fm student − plain student |" if len(names) == 2 else " |"),
              "|" + "---|" * (3 + len(names) + (len(names) == 2))]
        for split in ("val", "test"):
            first = done[names[0]][split]
            y = first["labels"]
            cells = [ci(paired_ci([(first["teacher"], None)], y, resamples, seed))]
            cells += [ci(paired_ci([(done[c][split]["student"], done[c][split]["teacher"])], y, resamples, seed))
                      for c in names]
            if len(names) == 2:
                cells.append(ci(paired_ci([(done[names[0]][split]["student"], done[names[1]][split]["student"])], y,
                                          resamples, seed)))
            L.append(f"| {split} | {len(y)} | " + " | ".join(cells) + " |")
    return L


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=("full", "small"), default="full")
    ap.add_argument("--cases", nargs="+", choices=tuple(CASES), default=list(CASES))
    ap.add_argument("--max-steps", type=int, default=None, help="distillation steps for both cases (None: derived)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "robust_kd")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-samples", type=int, default=None, help="cap each split (a quick check of the script)")
    ap.add_argument("--resamples", type=int, default=1000, help="paired bootstrap resamples")
    args = ap.parse_args()
    from edgekd._compat import quiet_third_party

    quiet_third_party()
    os.environ.setdefault("EDGEKD_NO_PROGRESS", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.data == "small":
        from distill_targets import stratified_slice

        data, epochs = stratified_slice(PNEUMONIA, args.out / "pneumonia-550.npz", 550, 80, 0), 30
    else:
        data, epochs = PNEUMONIA, 8
    t0 = time.perf_counter()
    w = teacher(data, args.out, epochs, args.seed)
    print(f"teacher {w.name} ready after {time.perf_counter() - t0:.0f} s", flush=True)
    rows = [run(c, args.out, data, w, args.max_steps, args.seed, args.max_samples) for c in args.cases]
    cap = f", --max-samples {args.max_samples}" if args.max_samples else ""
    note = (f"PneumoniaMNIST {args.data} ({data.name}{cap}), 64×64, intel-cpu, seed {args.seed}, teacher ResNet-18 "
            f"{epochs} epochs (suite recipe); robustness images val {rows[0]['images'].get('val')} / test "
            f"{rows[0]['images'].get('test')}; 24 shifts (8 families × 3 severities)")
    text = "\n".join(tables(rows, args.resamples, args.seed, note))
    print("\n" + text, flush=True)
    (args.out / "results.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
