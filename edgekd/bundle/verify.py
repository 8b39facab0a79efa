"""``edgekd verify BUNDLE``: is this bundle exactly what edgekd shipped, and does its model still compute it?

Three checks, every problem reported by file name:

1. **manifest integrity**: ``manifest_sha256`` equals the sha256 of the manifest's canonical JSON
   (see :mod:`edgekd.bundle.manifest`), and, with ``--manifest-sha256``, equals a value recorded
   elsewhere;
2. **files**: every file the manifest lists exists as a regular file with the recorded sha256 and
   size (else *changed* or *missing*), and no other file is there (*extra*);
3. **outputs**: the bundle's model re-run on ``sample.npz`` (runtime and threads as recorded)
   reproduces ``expected_logits.npy`` within :data:`REPRODUCE` (skipped, with the reason, when a
   file it needs already failed check 2).

A folder without ``manifest.json`` is not a bundle: InputError (exit code 2).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from .._io import sha256_file
from ..errors import InputError
from ..lower._base import first_line
from .archive import FOLDER, is_archive, safe_extract
from .manifest import DIGEST_FIELD, MANIFEST, manifest_digest, model_files

# Allowed max |Δlogit| of a re-run, times s = max(1, max |recorded logit|). The recorded logits
# come from the same file and runtime at one thread; re-run on the same machine they match
# exactly (0.0 seen); the bounds leave room for another CPU's kernels (fp32) and requantization
# rounding (int8). A changed prediction fails unless the recorded top-two logits were within
# 2 × the allowed difference (a numerical tie).
REPRODUCE = {"fp32": 1e-4, "int8": 0.05}


@dataclass
class Problem:
    kind: str  # "changed", "missing", "extra", "manifest" or "outputs"
    path: str  # the file it concerns, relative to the bundle
    detail: str

    def line(self) -> str:
        return f"{self.kind:<8} {self.path}: {self.detail}" if self.detail else f"{self.kind:<8} {self.path}"


@dataclass
class OutputCheck:
    runtime: str
    model: str
    n: int = 0  # sample images compared
    max_abs_diff: float | None = None
    allowed: float | None = None
    agreement: float | None = None  # fraction of identical top-1 predictions (ties forgiven)
    ok: bool = False
    skipped: str | None = None  # why the model was not re-run
    note: str | None = None  # e.g. TensorRT: the ONNX the engine is built from, run with ONNX Runtime


@dataclass
class Verification:
    bundle: str  # what was verified (folder or archive)
    manifest_sha256: str | None  # recomputed digest of the manifest
    files: int  # files the manifest lists
    problems: list[Problem] = field(default_factory=list)
    outputs: OutputCheck | None = None
    summary: dict = field(default_factory=dict)  # target, shipped candidate, edgekd version, created

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def verify_bundle(path: Path, *, manifest_sha256: str | None = None, run_outputs: bool = True) -> Verification:
    """Verify a bundle folder or archive (.tar.gz / .tgz / .tar); InputError when it is not a bundle."""
    path = Path(path)
    if path.is_file() and is_archive(path):
        with tempfile.TemporaryDirectory(prefix="edgekd-verify-") as tmp:
            root, extra = _extracted_root(safe_extract(path, Path(tmp)), path)
            result = verify_folder(root, manifest_sha256=manifest_sha256, run_outputs=run_outputs)
            result.problems[:0] = [Problem("extra", f"(archive)/{e}", "outside the bundle folder") for e in extra]
    elif path.is_dir():
        result = verify_folder(path, manifest_sha256=manifest_sha256, run_outputs=run_outputs)
    elif path.exists():
        raise InputError(f"{path} is neither a bundle folder nor a .tar.gz/.tgz/.tar archive; pass build/bundle "
                         f"or build/bundle.tar.gz")
    else:
        raise InputError(f"{path} does not exist; pass a bundle folder (build/bundle) or archive (build/bundle.tar.gz)")
    result.bundle = str(path)
    return result


def _extracted_root(dest: Path, archive: Path) -> tuple[Path, list[str]]:
    """The bundle folder inside an extracted archive, and any other top-level entries."""
    if (dest / MANIFEST).is_file():
        return dest, []
    tops = sorted(p.name for p in dest.iterdir())
    roots = [t for t in tops if (dest / t / MANIFEST).is_file()]
    if len(roots) != 1:
        raise InputError(f"{archive} holds no single folder with a {MANIFEST} (top level: {', '.join(tops) or 'empty'}); "
                         f"it is not an edgekd bundle archive")
    root = FOLDER if FOLDER in roots else roots[0]
    return dest / root, [t for t in tops if t != root]


def load_manifest(folder: Path) -> tuple[dict | None, Problem | None]:
    """The parsed manifest, or the problem that makes it unreadable; InputError when there is none."""
    path = folder / MANIFEST
    if not path.is_file() or path.is_symlink():
        raise InputError(f"{folder} has no {MANIFEST}: it is not an edgekd bundle (bundles are written by "
                         f"`edgekd compress` into <out>/bundle)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, Problem("manifest", MANIFEST, f"not valid JSON ({exc}): it was damaged or edited")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return None, Problem("manifest", MANIFEST, "has no 'files' table: it was damaged or edited")
    return manifest, None


def verify_folder(folder: Path, *, manifest_sha256: str | None = None, run_outputs: bool = True) -> Verification:
    """The three checks of the module doc on an unpacked bundle folder."""
    folder = Path(folder)
    manifest, problem = load_manifest(folder)
    if manifest is None:  # nothing else can be checked against it
        return Verification(str(folder), None, 0, [problem])
    digest = manifest_digest(manifest)
    result = Verification(str(folder), digest, len(manifest["files"]), summary=_summary(manifest))
    result.problems += check_integrity(manifest, digest, manifest_sha256)
    result.problems += check_files(folder, manifest["files"])
    if run_outputs:
        result.outputs = check_outputs(folder, manifest, result.problems)
        if not result.outputs.ok and result.outputs.skipped is None:
            result.problems.append(Problem("outputs", result.outputs.model, _outputs_detail(result.outputs)))
    return result


def _summary(manifest: dict) -> dict:
    shipped, target = manifest.get("shipped") or {}, manifest.get("target") or {}
    return {"target": target.get("name"), "shipped": shipped.get("name"), "backend": shipped.get("backend"),
            "precision": shipped.get("precision"), "edgekd_version": manifest.get("edgekd_version"),
            "created": manifest.get("created")}


def check_integrity(manifest: dict, digest: str, pinned: str | None) -> list[Problem]:
    problems = []
    recorded = manifest.get(DIGEST_FIELD)
    if recorded != digest:
        problems.append(Problem("manifest", MANIFEST, f"integrity check failed: its content hashes to {digest[:16]}… "
                                f"but it records {str(recorded)[:16]}…; it was edited after it was written"))
    if pinned is not None and pinned.strip().lower() != digest:
        problems.append(Problem("manifest", MANIFEST, f"is not the pinned manifest: sha256 {digest[:16]}… ≠ "
                                f"--manifest-sha256 {pinned.strip()[:16]}…"))
    return problems


def check_files(folder: Path, files: dict) -> list[Problem]:
    """Changed and missing files (by the manifest), then extra ones (on disk)."""
    problems, listed = [], set()
    for rel, rec in sorted(files.items()):
        if not _safe_rel(rel) or rel == MANIFEST:
            problems.append(Problem("manifest", MANIFEST, f"lists an unsafe path '{rel}': it was edited"))
            continue
        listed.add(rel)
        p = folder / rel
        if p.is_symlink():
            problems.append(Problem("changed", rel, "is a symbolic link, not the recorded file"))
        elif not p.exists():
            problems.append(Problem("missing", rel, ""))
        elif not p.is_file():
            problems.append(Problem("changed", rel, "is not a regular file"))
        else:
            size, want = p.stat().st_size, rec if isinstance(rec, dict) else {}
            sha = sha256_file(p)
            if sha != want.get("sha256") or size != want.get("size"):
                problems.append(Problem("changed", rel, f"sha256 {sha[:16]}… (size {size}) ≠ recorded "
                                        f"{str(want.get('sha256'))[:16]}… (size {want.get('size')})"))
    problems += [Problem("extra", e, "not listed in the manifest") for e in _entries(folder) if e not in listed]
    return problems


def _safe_rel(rel: str) -> bool:
    parts = PurePosixPath(rel).parts
    return bool(parts) and not rel.startswith("/") and "\\" not in rel and ".." not in parts


def _entries(folder: Path) -> list[str]:
    """Every file, link, other entry and empty folder under ``folder`` except the manifest (links not followed)."""
    found = []
    for top, dirs, names in os.walk(folder, followlinks=False):
        base = Path(top)
        for d in dirs:
            p = base / d
            if p.is_symlink() or not any(p.iterdir()):
                found.append(p.relative_to(folder).as_posix() + ("" if p.is_symlink() else "/"))
        found += [(base / n).relative_to(folder).as_posix() for n in names]
    return sorted(e for e in found if e != MANIFEST)


def check_outputs(folder: Path, manifest: dict, problems: list[Problem]) -> OutputCheck:
    """Re-run the model on the sample and compare with the recorded logits."""
    spec = manifest.get("verification")
    if not isinstance(spec, dict) or not {"runtime", "model", "precision", "sample", "expected_logits"} <= set(spec):
        return OutputCheck("?", MANIFEST, note="it has no verification record (runtime, model, sample, expected logits)")
    check = OutputCheck(spec["runtime"], spec["model"], note=spec.get("note"))
    needed = [*model_files(spec), spec["sample"], spec["expected_logits"]]
    bad = sorted({p.path for p in problems if p.path in needed} | {n for n in needed if n not in manifest["files"]})
    if bad:
        check.skipped = f"{', '.join(bad)} did not verify"
        return check
    from .manifest import run_model

    try:
        expected = np.load(folder / spec["expected_logits"], allow_pickle=False)
        spec = {**spec, "threads": int(spec.get("threads", 1))}
        got = run_model(folder, spec)
    except Exception as exc:  # noqa: BLE001  any failure to re-run a shipped model is a failed check, not a crash
        check.note = f"the model could not be re-run: {first_line(exc)}"
        return check
    return compare_logits(check, expected, got, spec["precision"])


def compare_logits(check: OutputCheck, expected: np.ndarray, got: np.ndarray, precision: str) -> OutputCheck:
    """Fill ``check`` with max |Δlogit| and prediction agreement; ok when within :data:`REPRODUCE`
    (every prediction the same, near-ties forgiven), compared by the lowering checks' own function."""
    from ..errors import LoweringError
    from ..lower.validate import Tolerance
    from ..lower.validate import compare_logits as compare

    try:
        a = compare("bundle outputs", expected, got,
                    Tolerance(1.0, REPRODUCE.get(precision, REPRODUCE["int8"]), forgive_ties=True))
    except LoweringError as exc:
        check.note = str(exc).removeprefix("bundle outputs: ")
        return check
    check.n, check.max_abs_diff, check.allowed, check.agreement, check.ok = \
        a.n, a.max_abs_diff, a.max_abs_diff_allowed, a.agreement, a.ok
    return check


def _outputs_detail(check: OutputCheck) -> str:
    if check.max_abs_diff is None:
        return check.note or "could not be compared"
    return (f"re-run with {check.runtime} differs from the recorded outputs: max |Δlogit| {check.max_abs_diff:.3g} "
            f"(allowed {check.allowed:.3g}), predictions agree {check.agreement:.1%} of {check.n}")
