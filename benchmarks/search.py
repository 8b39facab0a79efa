"""Benchmark: `compress --search` against the defaults and the hand-found setting, PneumoniaMNIST 64×64, CPU targets.

    python benchmarks/search.py [--data PATH] [--teacher-weights W] [--budget 30m] [--targets intel-cpu generic-cpu]
                                [--lowrank] [--out DIR]

Per target, in one process and one stage cache (so each ratio below comes from one run on one machine):
  defaults  plain `compress` (no training, pruning or budget option): the issue's first target,
            shipped AUC >= teacher − 0.01, >= 30× faster than the torch fp32 teacher, >= 3× faster
            than the teacher's OpenVINO INT8 PTQ, the whole compress under 15 minutes;
  hand      lcnet_100, --prune-depth 6 --prune-ratio 0.9 (the suite's hand-found depth6-r90);
  search    `compress --search --search-budget BUDGET`: the shipped model must be at least as
            fast as `hand` at AUC >= teacher − 0.01 (`--lowrank` adds low-rank energies to the space).
The ResNet-18 teacher is trained once by the suite recipe (8 epochs, cached in --out) unless given.
Data: $EDGEKD_PNEUMONIA or ../shared/data/pneumoniamnist.npz (never committed). Progress goes to
the terminal; the table is printed at the end and written to --out/search-table.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
DEFAULT_DATA = Path(os.environ.get("EDGEKD_PNEUMONIA", REPO.parent / "shared" / "data" / "pneumoniamnist.npz"))


def run_case(case: str, target: str, args, weights: Path):
    from edgekd.api import compress
    from edgekd.config import CompressConfig, Preprocessing, SearchConfig
    from edgekd.errors import NotShippedError

    cfg = CompressConfig(target=target, out=args.out / target / case, teacher="timm:resnet18", teacher_weights=weights,
                         data=args.data, preprocessing=Preprocessing(image_size=args.image_size), seed=args.seed,
                         overwrite=True, cache_dir=args.out / "cache")
    if case == "hand":
        cfg.distill.student, cfg.prune.depth, cfg.prune.ratio = "lcnet_100", 6, 0.9
    elif case.startswith("search"):
        cfg.search = SearchConfig(budget=args.budget, lowrank=case == "search-lowrank")
    print(f"\n===== {target} / {case} =====", flush=True)
    t0 = time.perf_counter()
    try:
        rep = compress(cfg, log=lambda m: print(m, flush=True)).report
    except NotShippedError as exc:
        print(f"{target}/{case}: {exc}")
        rep = json.loads((cfg.out / "report.json").read_text())
    return rep, time.perf_counter() - t0


def row(target: str, case: str, rep: dict, secs: float) -> tuple[str, float | None]:
    c = {x["name"]: x for x in rep["candidates"]}
    teacher = c["teacher-torch-fp32"]
    s = c.get(rep["shipped"]) if rep["shipped"] else None
    search = rep.get("search") or {}
    chosen = (search.get("chosen") or {}).get("label", "—") if search else "—"
    if s is None:
        return (f"| {target} | {case} | — | {chosen} | {teacher['metrics']['auc']:.4f} | — | — | — | — | — | "
                f"{secs:.0f} | NO |"), None
    sp = rep["speedups"]
    ok = (s["metrics"]["auc"] >= teacher["metrics"]["auc"] - 0.01 and sp["latency_vs_teacher-torch-fp32"] >= 30
          and sp["latency_vs_teacher-openvino-int8"] >= 3 and sp["size_vs_teacher-onnxruntime-fp32"] >= 20)
    if case == "defaults":
        ok = ok and secs < 15 * 60
    tried = f" ({len(search['trials'])} configs, {search['seconds_total']:.0f} s)" if search else ""
    return (f"| {target} | {case} | {s['name']} | {chosen}{tried} | {teacher['metrics']['auc']:.4f} | "
            f"{s['metrics']['auc']:.4f} | {s['latency_ms']['p50']:.3f} | {sp['latency_vs_teacher-torch-fp32']:.1f}× | "
            f"{sp['latency_vs_teacher-openvino-int8']:.1f}× | {sp['size_vs_teacher-onnxruntime-fp32']:.1f}× | "
            f"{secs:.0f} | {'yes' if ok else 'NO'} |"), s["latency_ms"]["p50"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--teacher-weights", type=Path, default=None)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--targets", nargs="+", default=["intel-cpu", "generic-cpu"])
    ap.add_argument("--cases", nargs="+", default=["defaults", "hand", "search"],
                    choices=["defaults", "hand", "search", "search-lowrank"])
    ap.add_argument("--budget", default="30m", help="--search-budget of the search case")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out-search")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not args.data.exists():
        print(f"error: {args.data} not found (set EDGEKD_PNEUMONIA or pass --data)", file=sys.stderr)
        return 2
    from edgekd._compat import quiet_third_party
    from pneumonia_cpu import train_teacher

    quiet_third_party()
    weights = args.teacher_weights or train_teacher(args.data, args.image_size, 8, args.out, args.seed)
    lines = ["| target | case | shipped | search chose | teacher test AUC | shipped test AUC | p50 ms | vs torch fp32 | "
             "vs OV INT8 | smaller vs ONNX | compress s | targets met |", "|" + "---|" * 12]
    verdicts = []
    for target in args.targets:
        p50 = {}
        for case in args.cases:
            rep, secs = run_case(case, target, args, weights)
            line, p50[case] = row(target, case, rep, secs)
            lines.append(line)
            print(line, flush=True)
        if "hand" in p50 and "search" in p50:
            h, s = p50["hand"], p50["search"]
            verdicts.append(f"{target}: search {s if s is None else f'{s:.3f}'} ms vs hand "
                            f"{h if h is None else f'{h:.3f}'} ms: "
                            + ("search at least as fast" if s is not None and (h is None or s <= h) else "search SLOWER"))
    mach = rep["machine"]
    text = "\n".join([f"machine: {mach['cpu']}, {mach['threads']} threads, load {mach.get('loadavg')}", "", *lines, "",
                      *verdicts]) + "\n"
    (args.out / "search-table.md").write_text(text)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
