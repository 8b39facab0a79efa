"""Benchmark: peak memory of a whole `edgekd compress` with the train split read from disk (issue 11).

    python benchmarks/streaming.py [--train 6000 12000] [--val 200] [--test 200] [--size 224]
        [--max-steps 20] [--modes 1 0] [--processes 1 2] [--data PATH] [--out DIR]

Generates, once, a seeded uint8 ``.npz`` of gray images stored at --size×--size: PneumoniaMNIST's
images upsampled (bilinear, PIL) and cycled in a seeded order with their labels to --train images (val and test from its
val and test splits). For each train size and each ``EDGEKD_STREAM`` mode (1: from disk, 0: in memory)
a child process runs ``edgekd.api.compress`` (intel-cpu, a timm ResNet-18 teacher with seeded random
weights: accuracy is not the point here, so nothing is expected to ship; --max-steps keeps training
short) and prints its peak RSS (``ru_maxrss``), the seconds it took and the distillation throughput
(images/s over the distill stage, its two val passes included). Each child has its own stage cache (nothing reused) and the
same ``$EDGEKD_CACHE`` for the data cache, which the first streamed run of a size writes.
``--processes 1 2`` runs each case in one process and under ``torchrun --nproc-per-node 2`` (gloo, one
thread each: torchrun's default): the throughput is the whole group's (the global batch per step over
rank 0's distill seconds) and the peak RSS is the sum of the processes' peaks.
Data: $EDGEKD_PNEUMONIA or ../shared/data/pneumoniamnist.npz (never committed).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("EDGEKD_PNEUMONIA", REPO.parent / "shared" / "data" / "pneumoniamnist.npz"))

CHILD = textwrap.dedent("""
    import json, os, resource, sys, time
    from pathlib import Path
    import edgekd.models  # noqa: F401
    from edgekd.api import compress
    from edgekd.config import CompressConfig
    from edgekd.errors import NotShippedError
    npz, weights, out, steps = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    cfg = CompressConfig(target="intel-cpu", teacher="timm:resnet18", teacher_weights=weights, data=npz, out=out,
                         overwrite=True, force=True, seed=0, cache_dir=out.parent / (out.name + "-stages"))
    cfg.distill.max_steps = steps
    cfg.distill.evaluations = 2  # throughput of training steps, not of val passes
    t0 = time.perf_counter()
    try:
        compress(cfg, log=lambda m: print(m, file=sys.stderr))
    except NotShippedError as exc:
        print(f"not shipped (expected with a random teacher): {exc}", file=sys.stderr)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if os.environ.get("RANK", "0") != "0":  # another torchrun process: its memory only
        print(json.dumps({"rank": int(os.environ["RANK"]), "peak_rss_kib": rss}))
        sys.exit(0)
    report = json.loads((out / "report.json").read_text())
    hist = report["stages"]["distill"]["history"]
    d = report["stages"]["distill"]
    print(json.dumps({"rank": 0, "peak_rss_kib": rss, "seconds": seconds,
                      "distill": {"steps": d.get("steps_run"), "seconds": hist[-1]["seconds"] if hist else None,
                                  "batch": report["training"]["budget"]["batch_size"]}}))
""")


def make_npz(path: Path, source: Path, n_train: int, n_val: int, n_test: int, size: int) -> None:
    import numpy as np
    from PIL import Image

    with np.load(source) as z:
        src = {s: (z[f"{s}_images"], z[f"{s}_labels"].reshape(-1)) for s in ("train", "val", "test")}
    out = {}
    for s, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        images, labels = src[s]
        idx = np.random.default_rng(0).permutation(len(images))[np.arange(n) % len(images)]  # classes mixed
        big = np.empty((n, size, size), dtype=np.uint8)
        for i, j in enumerate(idx):
            big[i] = np.asarray(Image.fromarray(images[j]).resize((size, size), Image.BILINEAR))
        out[f"{s}_images"], out[f"{s}_labels"] = big, labels[idx]
    tmp = path.with_suffix(".partial.npz")
    np.savez(tmp, **out)
    os.replace(tmp, path)


def teacher_weights(path: Path) -> Path:
    if not path.exists():
        import torch

        from edgekd._compat import import_timm  # the torchvision shim, then timm
        from edgekd.models import save_weights

        torch.manual_seed(0)
        save_weights(import_timm().create_model("resnet18", in_chans=1, num_classes=2), path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, nargs="+", default=[6000, 12000])
    ap.add_argument("--val", type=int, default=200)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--max-steps", type=int, default=20)
    ap.add_argument("--modes", nargs="+", default=["1", "0"], choices=["1", "0"])
    ap.add_argument("--processes", type=int, nargs="+", default=[1], help="1: one process; 2: torchrun, 2 processes")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "streaming")
    args = ap.parse_args()
    if not args.data.exists():
        sys.exit(f"error: {args.data} not found: pass --data or set EDGEKD_PNEUMONIA")
    args.out.mkdir(parents=True, exist_ok=True)
    weights = teacher_weights(args.out / "teacher-resnet18-random.safetensors")
    rows = []
    for n in args.train:
        npz = args.out / f"pneumonia-{args.size}-train{n}-val{args.val}-test{args.test}.npz"
        if not npz.exists():
            make_npz(npz, args.data, n, args.val, args.test, args.size)
        for mode in args.modes:
            for procs in args.processes:
                env = {**os.environ, "EDGEKD_STREAM": mode, "EDGEKD_CACHE": str(args.out / "cache"),
                       "EDGEKD_NO_PROGRESS": "1"}
                run = args.out / f"run-{n}-stream{mode}-p{procs}"
                child = args.out / "child.py"
                child.write_text(CHILD)
                launch = ([sys.executable] if procs == 1 else
                          [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}"])
                p = subprocess.run([*launch, str(child), str(npz), str(weights), str(run), str(args.max_steps)],
                                   env=env, capture_output=True, text=True, check=False)
                if p.returncode != 0:
                    print(p.stderr[-3000:], file=sys.stderr)
                    sys.exit(f"error: the run with {n} train images, EDGEKD_STREAM={mode}, {procs} process(es) failed")
                ranks = [json.loads(line) for line in p.stdout.splitlines() if line.startswith('{"rank"')]
                r = next(x for x in ranks if x["rank"] == 0)
                d = r["distill"]
                ips = d["steps"] * d["batch"] / d["seconds"] if d["seconds"] else float("nan")
                rss = sum(x["peak_rss_kib"] for x in ranks) / 2**20
                rows.append((n, mode, procs, n * args.size * args.size * 4 / 2**30, rss, r["seconds"], ips))
                print(f"done: {n} train, EDGEKD_STREAM={mode}, {procs} process(es): peak RSS {rss:.2f} GiB",
                      file=sys.stderr)

    from edgekd.measure.machine import machine_info

    m = machine_info(2)
    print(f"machine: {m['cpu']}, {m['threads']} threads; {args.size}×{args.size} gray, val {args.val}, test "
          f"{args.test}, --max-steps {args.max_steps}, intel-cpu, timm ResNet-18 teacher")
    print("| train images | train split read | processes | train split as float32 GiB | peak RSS GiB (all processes) "
          "| compress s | distill images/s |")
    print("|---|---|---|---|---|---|---|")
    for n, mode, procs, gib, rss, sec, ips in rows:
        print(f"| {n} | {'from disk' if mode == '1' else 'in memory'} | {procs} | {gib:.2f} | {rss:.2f} | {sec:.0f} | "
              f"{ips:.1f} |")


if __name__ == "__main__":
    main()
