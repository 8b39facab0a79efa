"""The shipped bundle: everything a device needs to run and re-measure the shipped model.

    bundle/
      model.onnx | model.xml + model.bin   the shipped model (for TensorRT: the ONNX the engine is built from)
      build_engine.sh                      TensorRT targets: the exact trtexec command (engines are built on the device)
      runner.py                            standalone benchmark runner (numpy + the device runtime; Python >= 3.6)
      sample.npz                           preprocessed test images, labels (segmentation: masks) and class names
      expected_logits.npy                  the shipped model's logits on sample.npz, recorded on the host
      preprocessing.json, labels.json      what the device must do to a raw image, and what the outputs mean
                                           (labels.json: the operating point chosen on val, which runner.py uses)
      report.json                          the host report of this run
      README.txt                           how to run it
      manifest.json                        sha256 and size of every file above, provenance, its own digest

and, with ``--archive``, ``bundle.tar.gz`` beside it. :mod:`edgekd.bundle.manifest` writes the
manifest, :mod:`edgekd.bundle.archive` the archive, :mod:`edgekd.bundle.verify` checks both.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from .._io import write_json_atomic, write_text_atomic
from ..data import Dataset
from ..targets import TargetProfile
from .archive import write_archive
from .manifest import EXPECTED, MANIFEST, record_outputs, write_manifest

ARCHIVE = "bundle.tar.gz"

SAMPLE_SIZE = 300


def write_sample(data: Dataset, path: Path, n: int = SAMPLE_SIZE, seed: int = 0, task=None) -> int:
    """A seeded subset of the preprocessed test split, as the runner reads it (labels, or masks for segmentation)."""
    split = data.test.subset(n, seed)
    targets = task.sample_arrays(split) if task is not None else {"labels": split.labels.numpy().astype(np.int64)}
    np.savez(path, images=split.images.numpy().astype(np.float32), class_names=np.array(data.class_names), **targets)
    return len(split)


def write_bundle(work: Path, shipped: dict, data: Dataset, profile: TargetProfile, seed: int, task=None) -> Path:
    """Create ``work/bundle`` for the shipped candidate (a dict from report.json); ``task``: an
    edgekd.tasks.Task (None: the data's own task)."""
    if task is None:
        from ..tasks import get_task

        task = get_task(getattr(data, "task", "classification"))
    bundle = work / "bundle"
    bundle.mkdir()
    from ..lower import backend_info, get_backend

    backend = backend_info(shipped["backend"])
    for name, src in backend.files_for_bundle(work / shipped["path"]).items():
        shutil.copyfile(src, bundle / name)
    run_model, steps = backend.bundle_model, []
    if backend.device_built:  # the engine is built on the device from the bundle's model file
        shape = (profile.batch, data.channels, *data.image_size)
        run_model, step = get_backend(backend.name).prepare_bundle(bundle, profile, backend.bundle_model,
                                                                   shipped["precision"], shape)
        steps.append(step)
    from ..device import copy_runner

    copy_runner(bundle)
    n = write_sample(data, bundle / "sample.npz", n=task.sample_size, seed=seed, task=task)
    record_outputs(bundle, shipped)
    write_json_atomic(bundle / "preprocessing.json", data.preprocessing.to_dict())
    write_json_atomic(bundle / "labels.json", task.labels_json(shipped, data))
    # no --threshold: the runner reads the operating point chosen on val from labels.json
    steps.append(f"python3 runner.py --model {run_model} --runtime {backend.device_runtime} --sample sample.npz "
                 "--out device.json")
    steps.append("edgekd report --merge device.json --report report.json   # back on the host")
    write_text_atomic(bundle / "README.txt", "\n".join([
        f"edgekd bundle for target {profile.name}: {shipped['name']} ({shipped['backend']}, {shipped['precision']})",
        f"sample: {n} preprocessed test images (sample.npz); preprocessing: preprocessing.json",
        f"{MANIFEST}: sha256 of every file and where the model came from; {EXPECTED}: its logits on the sample",
        "", "Check it (on a host with edgekd, before copying it to the device):",
        "  edgekd verify .               # every hash, the manifest's integrity, and a re-run of the model",
        "", "Run on the device:", *[f"  {s}" for s in steps], "",
    ]))
    return bundle


def bundle_entry(bundle: Path, archive: bool) -> dict:
    """The report's ``bundle`` entry: every file the finished bundle will hold, and the archive if asked for."""
    names = {p.name for p in bundle.iterdir()} | {"report.json", MANIFEST}
    return {"path": bundle.name, "files": sorted(names), "manifest": f"{bundle.name}/{MANIFEST}",
            "archive": ARCHIVE if archive else None}


def finish_bundle(bundle: Path, report: dict) -> None:
    """Copy the final report into the bundle, then write its manifest (and ``bundle.tar.gz`` when the
    report's ``bundle.archive`` asks for it). Called after report.json is written."""
    write_text_atomic(bundle / "report.json", json.dumps(report, indent=2) + "\n")
    write_manifest(bundle, report)
    if (report.get("bundle") or {}).get("archive"):
        write_archive(bundle, bundle.parent / report["bundle"]["archive"])
