"""A bundle's ``manifest.json``: what was shipped, where it came from, and the hash of every file.

The manifest lists every other file of the bundle with its sha256 and size, and records the
provenance an audit asks for: edgekd version, teacher (sha256, format), dataset (sha256, split
sizes), the full resolved config, the target profile as used, preprocessing, class labels, the
shipped model's figures, the runtime versions and the creation time.

**Integrity.** A file cannot contain its own hash, so ``manifest_sha256`` is the sha256 of the
manifest's *canonical JSON without that field*: ``json.dumps(m, sort_keys=True,
separators=(",", ":"), ensure_ascii=True)`` encoded as UTF-8. Any edit of the manifest changes
that value. It detects changes, not forgery (whoever rewrites the manifest can recompute it), so
an audit records the value elsewhere and pins it: ``edgekd verify BUNDLE --manifest-sha256 HEX``.

**Recorded outputs.** ``expected_logits.npy`` holds the shipped model's logits on ``sample.npz``,
computed on the host at bundle time from the bundle's own model file, one thread: ONNX Runtime
for ``model.onnx``, OpenVINO for ``model.xml``. A TensorRT engine is built on the device, so for
TensorRT targets the host records (and ``edgekd verify`` re-runs) the ONNX file the engine is
built from, with ONNX Runtime.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from .._io import sha256_file, write_json_atomic

MANIFEST = "manifest.json"
EXPECTED = "expected_logits.npy"
SAMPLE = "sample.npz"
MANIFEST_VERSION = 1
DIGEST_FIELD = "manifest_sha256"
TENSORRT_NOTE = ("the TensorRT engine is built on the device; the host records and re-runs the ONNX file "
                 "it is built from, with ONNX Runtime")


def verification_spec(shipped: dict) -> dict:
    """How the shipped candidate's outputs are recorded and re-run on a host (stored in the manifest)."""
    from ..lower import backend_info

    backend = backend_info(shipped["backend"])
    spec = {
        "runtime": backend.host_runtime,
        "model": backend.bundle_model,
        # the host runs the file's own arithmetic: a TensorRT FP16 engine is built from an fp32 ONNX
        "precision": "int8" if shipped["precision"] == "int8" else "fp32",
        "sample": SAMPLE,
        "expected_logits": EXPECTED,
        "threads": 1,  # one thread: the same reduction order every time
    }
    if backend.device_built:
        spec["note"] = TENSORRT_NOTE
    return spec


def model_files(spec: dict) -> list[str]:
    """The bundle files a verification run reads as the model."""
    return [spec["model"], spec["model"][:-4] + ".bin"] if spec["model"].endswith(".xml") else [spec["model"]]


def run_model(bundle: Path, spec: dict) -> np.ndarray:
    """The bundle model's logits (float32 N×K) on its sample, run as ``spec`` says."""
    from ..lower import get_backend
    from ..lower._base import predict_batched

    with np.load(Path(bundle) / spec["sample"], allow_pickle=False) as sample:
        images = sample["images"]
    runner = get_backend(spec["runtime"]).open_runner(Path(bundle) / spec["model"], threads=spec["threads"],
                                                      precision=spec["precision"])
    return predict_batched(runner, images, desc="bundle outputs")


def record_outputs(bundle: Path, shipped: dict) -> np.ndarray:
    """Run the bundle's model on its sample and write the logits to ``expected_logits.npy``."""
    logits = run_model(bundle, verification_spec(shipped))
    path = Path(bundle) / EXPECTED
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, logits.astype(np.float32))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return logits


def file_index(bundle: Path) -> dict[str, dict]:
    """Relative POSIX path → {sha256, size} of every regular file in ``bundle`` except the manifest."""
    bundle = Path(bundle)
    index = {}
    for p in sorted(bundle.rglob("*")):
        rel = p.relative_to(bundle).as_posix()
        if rel == MANIFEST or not p.is_file() or p.is_symlink():
            continue
        index[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    return index


def canonical_json(manifest: dict) -> bytes:
    """The manifest without its digest field, as canonical JSON bytes (what ``manifest_sha256`` hashes)."""
    body = {k: v for k, v in manifest.items() if k != DIGEST_FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("utf-8")


def manifest_digest(manifest: dict) -> str:
    return hashlib.sha256(canonical_json(manifest)).hexdigest()


def shipped_candidate(report: dict) -> dict:
    name = report["shipped"]
    return next(c for c in report["candidates"] if c["name"] == name)


def build_manifest(bundle: Path, report: dict) -> dict:
    """The manifest of a finished bundle (every file already written), digest included."""
    bundle = Path(bundle)
    shipped = shipped_candidate(report)
    labels = json.loads((bundle / "labels.json").read_text(encoding="utf-8"))
    machine = report.get("machine") or {}
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "kind": "edgekd-bundle",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "edgekd_version": __version__,
        "report_created": report.get("created"),
        "teacher": report["teacher"],
        "dataset": report["dataset"],
        "config": report["config"],
        "target": report["target"],
        "preprocessing": report["preprocessing"],
        "labels": labels,
        "shipped": shipped,
        "runtimes": {"python": machine.get("python"), **(machine.get("runtimes") or {})},
        "built_on": {k: machine.get(k) for k in ("cpu", "isa", "os", "arch")},
        "verification": verification_spec(shipped),
        "files": file_index(bundle),
    }
    manifest = json.loads(json.dumps(manifest))  # hash exactly what a reader of the file will parse
    manifest[DIGEST_FIELD] = manifest_digest(manifest)
    return manifest


def write_manifest(bundle: Path, report: dict) -> dict:
    """Write ``bundle/manifest.json`` (atomically) and return it."""
    manifest = build_manifest(bundle, report)
    write_json_atomic(Path(bundle) / MANIFEST, manifest)
    return manifest
