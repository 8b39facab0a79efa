"""``bundle.tar.gz``: writing a bundle archive, and extracting one without trusting it.

The archive holds the bundle's regular files under one folder, ``bundle/``, in sorted order with
fixed owner (0/0), modes (0644, 0755 for executables) and timestamps (the manifest's creation
time), so the same bundle always gives the same bytes.

Extraction refuses, naming the member: absolute paths (``/x``, ``C:\\x``), ``..`` anywhere in a
path, backslashes, symbolic and hard links, devices, FIFOs and any other non-regular member,
duplicate names, and more than :data:`MAX_BYTES` of content. The checks are explicit (they do
not depend on the Python version); where Python's ``tarfile.data_filter`` exists (3.10.12+,
3.11.4+) it is applied too. Files are then written one by one with plain modes.
"""
from __future__ import annotations

import gzip
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from datetime import datetime
from pathlib import Path, PurePosixPath

from ..errors import InputError

FOLDER = "bundle"
MAX_BYTES = 8 << 30  # 8 GiB: far above any edge model, far below filling a disk with a crafted archive
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def is_archive(path: Path) -> bool:
    return Path(path).name.lower().endswith(ARCHIVE_SUFFIXES)


def write_archive(bundle: Path, dest: Path, mtime: int | None = None) -> Path:
    """Write ``dest`` (a .tar.gz of every regular file of ``bundle`` under ``bundle/``) atomically."""
    bundle, dest = Path(bundle), Path(dest)
    if mtime is None:
        mtime = _manifest_time(bundle)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=mtime) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for p in sorted(bundle.rglob("*")):
                if p.is_symlink() or not (p.is_file() or p.is_dir()):
                    continue
                info = tar.gettarinfo(str(p), arcname=f"{FOLDER}/{p.relative_to(bundle).as_posix()}")
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = mtime
                executable = p.is_file() and p.stat().st_mode & stat.S_IXUSR
                info.mode = 0o755 if p.is_dir() or executable else 0o644
                if p.is_file():
                    with open(p, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _manifest_time(bundle: Path) -> int:
    import json

    try:
        created = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))["created"]
        return int(datetime.fromisoformat(created).timestamp())
    except (OSError, KeyError, ValueError, TypeError):
        return 0


def unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` must not be extracted, or None when it is a plain file or folder at a safe path."""
    name = member.name
    if member.issym():
        return f"a symbolic link (to '{member.linkname}')"
    if member.islnk():
        return f"a hard link (to '{member.linkname}')"
    if member.ischr() or member.isblk():
        return "a device file"
    if member.isfifo():
        return "a FIFO"
    if not (member.isfile() or member.isdir()):
        return "not a regular file or folder"
    if not name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if "\\" in name:
        return "a path with a backslash"
    if ".." in PurePosixPath(name).parts:
        return "a path with '..' (outside the extraction folder)"
    return None


def safe_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """Every member, checked; InputError naming the first unsafe one."""
    members, seen, total = [], set(), 0
    for m in tar.getmembers():
        reason = unsafe_reason(m)
        key = PurePosixPath(m.name).as_posix().rstrip("/")
        if reason is None and key in seen:
            reason = "listed twice (a later copy would silently replace the first)"
        if reason is not None:
            raise InputError(f"refusing to extract {archive.name}: member '{m.name}' is {reason}; a bundle archive "
                             f"holds only regular files under one folder (re-create it with `edgekd compress --archive`)")
        seen.add(key)
        total += m.size
        if total > MAX_BYTES:
            raise InputError(f"refusing to extract {archive.name}: its members hold more than {MAX_BYTES >> 30} GiB, "
                             f"far more than any bundle; check where it came from")
        members.append(m)
    return members


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into the existing empty folder ``dest`` after checking every member; returns ``dest``."""
    archive, dest = Path(archive), Path(dest)
    try:
        tar = tarfile.open(archive, mode="r:*")
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise InputError(f"{archive} is not a readable tar archive ({exc}); pass a bundle folder or the "
                         f"bundle.tar.gz written by `edgekd compress --archive`") from None
    with tar:
        try:
            members = safe_members(tar, archive)
            for m in members:
                _extract_one(tar, m, dest)
        except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
            raise InputError(f"{archive} is damaged ({exc}); copy the archive again") from None
    return dest


def _extract_one(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    if hasattr(tarfile, "data_filter"):  # Python's own check as a second opinion
        try:
            tarfile.data_filter(member, str(dest))
        except tarfile.FilterError as exc:
            raise InputError(f"refusing to extract member '{member.name}': {exc}") from None
    target = dest.joinpath(*PurePosixPath(member.name).parts)
    if dest.resolve() not in (target.resolve(), *target.resolve().parents):
        raise InputError(f"refusing to extract member '{member.name}': it resolves outside the extraction folder")
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    src = tar.extractfile(member)
    with src, open(target, "xb") as out:
        shutil.copyfileobj(src, out)
    target.chmod(0o755 if member.mode & stat.S_IXUSR else 0o644)
