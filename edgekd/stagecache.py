"""Resumable stages: each stage's output lives under a key made from its inputs and its config.

A stage's key is the sha256 of its name, edgekd's version and everything its output depends on
(the keys of the stages before it, its own config, the seed). A finished stage is a folder
``<cache>/<stage>-<key>/`` holding its files and ``done.json`` (each file's sha256 and size, plus
whatever small facts the stage records). The folder is built under a temporary name and renamed
into place only when every file is written, so an interrupted run (Ctrl-C, ``kill -9``, a power
cut) never leaves a folder that looks finished but is not; the next run with the same inputs
reuses every finished stage and says so. Because keys chain, a changed setting invalidates
exactly the stages after it. ``force`` re-runs every stage and replaces its entry.

Each stage starts from a seed derived from the run's seed and the stage's name, so a resumed run
follows the same random streams as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from . import __version__
from ._io import sha256_file
from .errors import InputError, NotShippedError

DONE = "done.json"


def digest(*parts: Any) -> str:
    """sha256 of the canonical JSON of ``parts`` (paths and tuples become strings and lists)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def stage_seed(seed: int, stage: str) -> int:
    return int(digest("seed", seed, stage)[:8], 16)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class StageEntry:
    """A finished stage: its folder and what ``done.json`` recorded."""

    stage: str
    key: str
    path: Path
    info: dict = field(default_factory=dict)
    reused: bool = False

    def file(self, name: str) -> Path:
        return self.path / name


class StageStore:
    """A folder of finished stages, addressed by key."""

    def __init__(self, root: Path, *, seed: int = 0, force: bool = False, log: Callable[[str], None] = print) -> None:
        self.root = Path(root)
        self.seed = seed
        self.force = force
        self.log = log
        self.current: str | None = None  # the stage running now (for the interruption message)
        self.finished: list[str] = []

    def key(self, stage: str, *parts: Any) -> str:
        return digest(stage, __version__, *parts)

    def entry_path(self, stage: str, key: str) -> Path:
        return self.root / f"{stage}-{key[:24]}"

    def lookup(self, stage: str, key: str) -> StageEntry | None:
        """The finished entry for ``key``, or None (also when a file no longer matches its hash)."""
        path = self.entry_path(stage, key)
        done = path / DONE
        if not done.is_file():
            return None
        try:
            meta = json.loads(done.read_text())
        except (OSError, ValueError):
            meta = None
        if not isinstance(meta, dict) or meta.get("key") != key:
            self.log(f"  stage {stage}: cached entry {path.name} is unreadable; running it again")
            return None
        for name, rec in meta.get("files", {}).items():
            f = path / name
            if not f.is_file() or f.stat().st_size != rec["size"] or sha256_file(f) != rec["sha256"]:
                self.log(f"  stage {stage}: cached file {f} changed since it was written; running the stage again")
                return None
        return StageEntry(stage, key, path, meta.get("info", {}), reused=True)

    def run(self, stage: str, key: str, produce: Callable[[Path], dict | None], what: str = "") -> StageEntry:
        """Reuse the finished entry for ``key`` or run ``produce(folder)`` and keep what it wrote.

        ``produce`` writes its files into the folder it is given and returns small JSON facts
        (kept in done.json, returned as ``entry.info``).
        """
        self.current = stage
        if not self.force:
            hit = self.lookup(stage, key)
            if hit is not None:
                self.log(f"  reusing finished stage {stage}{' (' + what + ')' if what else ''}: {hit.path}")
                self.finished.append(stage)
                self.current = None
                return hit
        self.root.mkdir(parents=True, exist_ok=True)
        self._sweep()
        tmp = self.root / f".tmp-{stage}-{key[:12]}-{os.getpid()}-{time.monotonic_ns()}"
        tmp.mkdir()
        try:
            seed_everything(stage_seed(self.seed, stage))
            info = produce(tmp) or {}
            files = {p.relative_to(tmp).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
                     for p in sorted(tmp.rglob("*")) if p.is_file()}
            meta = {"stage": stage, "key": key, "edgekd_version": __version__, "files": files, "info": info,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            (tmp / DONE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
            _fsync_tree(tmp)
            final = self.entry_path(stage, key)
            if final.exists():  # --force, or a corrupted entry: replace it
                shutil.rmtree(final)
            os.rename(tmp, final)  # atomic: the entry appears complete or not at all
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.finished.append(stage)
        self.current = None
        return StageEntry(stage, key, final, info)

    def _sweep(self) -> None:
        """Remove temporary folders left by runs that were killed (their process is gone)."""
        sweep_leftovers(self.root.glob(".tmp-*"))


def sweep_leftovers(paths: Iterable[Path]) -> None:
    """Delete ``<name>-<pid>-<n>`` folders whose process no longer runs (work of a killed run).

    Stage temporaries (``.tmp-<stage>-<key>-<pid>-<ns>``) and ``--out`` staging folders
    (``.<out>.partial-<pid>-<ms>``) both end that way; a live process's folders are kept.
    """
    for p in paths:
        try:
            pid = int(p.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        if not process_alive(pid):
            shutil.rmtree(p, ignore_errors=True)


def process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_tree(root: Path) -> None:
    """Flush every file (and the folder) to disk before the rename makes the entry visible."""
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def staging(out: Path, overwrite: bool) -> Iterator[Path]:
    """A private folder beside ``out``; renamed to ``out`` on success (or on NotShippedError)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise InputError(f"output folder {out} already exists and is not empty: pass --overwrite or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(out.parent.glob(f".{out.name}.partial-*"))  # folders of killed runs
    stage_dir = out.parent / f".{out.name}.partial-{os.getpid()}-{int(time.time() * 1000)}"
    stage_dir.mkdir()

    def publish() -> None:
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        stage_dir.rename(out)

    try:
        yield stage_dir
    except NotShippedError:
        publish()  # keep the candidates and the report for inspection
        raise
    except BaseException:
        shutil.rmtree(stage_dir, ignore_errors=True)
        raise
    publish()
