"""NNCF's C++ fake-quantize kernels: built once, on purpose, before the INT8 stage.

NNCF 3.4's torch quantizers (``QuantizeSymmetric`` / ``QuantizeAsymmetric`` in
``nncf.torch.quantization.quantize_functions``) call ``QuantizedFunctionsCPU.get(...)`` on the
first forward pass of a quantized model (PTQ validation, QAT, the INT8 stage's checks). That
first call JIT-compiles the ``quantized_functions_cpu`` extension with
``torch.utils.cpp_extension.load`` (g++ and ninja; about a minute on two busy cores) into
``<torch extensions dir>/nncf/quantized_functions_cpu/<torch version>/``, where the extensions
dir is ``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions/py<ver>_cpu``. Later processes
find ``quantized_functions_cpu.so`` there and only load it.

Two behaviours of NNCF that :func:`prepare_nncf` makes explicit:

* **Timeout.** NNCF runs the first load under a timeout read from ``NNCF_EXTENSION_LOAD_TIMEOUT``
  (seconds, default 60; ``0`` disables it) and raises ``ExtensionLoaderTimeoutException`` past
  it: on a busy machine ``edgekd compress`` died with that traceback. :func:`prepare_nncf` sets
  :data:`DEFAULT_TIMEOUT_S` unless the user set the variable, builds the extension before any
  quantization, and turns a timeout into one :class:`~edgekd.errors.SetupError` line.
* **Fallback.** When compiling fails (no C++ compiler, a compiler error), NNCF does not fail: it
  logs a warning and uses its pure-torch reference kernels (``ReferenceQuantizedFunctions``: the
  same fake-quantize formula in torch ops, slower, felt mostly in QAT). The CLI silences NNCF's
  warnings, so :func:`prepare_nncf` says so in one line of the run's log, and
  :func:`nncf_kernels` tells the report which kernels ran.

Only the CPU extension is prepared: edgekd quantizes on the CPU.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..errors import InputError, SetupError

TIMEOUT_ENV = "NNCF_EXTENSION_LOAD_TIMEOUT"  # read by nncf.torch.extensions on every first load
DEFAULT_TIMEOUT_S = 600  # NNCF's own default (60 s) ran out on a busy 2-core machine (a build took 53 s idle)
STALE_LOCK_S = 300  # a live build writes a file every minute or two (53 s for all of it here, idle)
_CHATTER = ("Compiling and loading torch extension", "Finished loading torch extension")
_FALLBACK = "Could not compile CPU quantization extensions"

_kernels: str | None = None  # "c++" or "torch" once prepare_nncf has run in this process


def nncf_kernels() -> str | None:
    """Which fake-quantize kernels NNCF uses in this process: ``"c++"`` (its compiled extension),
    ``"torch"`` (its pure-torch fallback), or None before :func:`prepare_nncf` ran."""
    return _kernels


def load_timeout() -> int | None:
    """The timeout NNCF will apply (seconds; None: no limit), set to :data:`DEFAULT_TIMEOUT_S` when unset.

    A value the user set is kept; one NNCF cannot read is an :class:`InputError` here rather than
    NNCF's ``ValueError`` mid-run.
    """
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None or raw.strip() == "":
        os.environ[TIMEOUT_ENV] = str(DEFAULT_TIMEOUT_S)
        return DEFAULT_TIMEOUT_S
    try:
        value = int(raw.strip())
    except ValueError:
        raise InputError(f"environment variable {TIMEOUT_ENV}={raw!r} must be a whole number of seconds (0: no "
                         f"limit): fix or unset it (edgekd then allows {DEFAULT_TIMEOUT_S} s)") from None
    return value if value > 0 else None


def extension_dir() -> Path:
    """Where NNCF builds and caches its CPU extension (created by NNCF if missing)."""
    from nncf.torch.quantization.extensions import QuantizedFunctionsCPULoader

    return Path(QuantizedFunctionsCPULoader.get_build_dir())


def _clear_stale_lock(folder: Path, log: Callable[[str], None]) -> None:
    """Remove torch's build lock when nothing in ``folder`` changed for :data:`STALE_LOCK_S` seconds.

    torch's builder (``FileBaton``) makes every later process wait while ``lock`` exists, even when
    the extension is built; a build killed mid-way (Ctrl-C, a killed test run: NNCF builds in a
    worker thread that dies with its process) leaves it behind, and NNCF then waits until its
    timeout. A live build keeps writing object files, so an old, untouched lock is a dead one.
    """
    lock = folder / "lock"
    try:
        newest = max(p.stat().st_mtime for p in [folder, *folder.iterdir()])
        if not lock.exists():
            return
        idle = time.time() - newest
        if idle < STALE_LOCK_S:
            return
        lock.unlink(missing_ok=True)
    except OSError:
        return  # gone meanwhile, or unreadable: NNCF's own wait and timeout apply
    log(f"removed a stale lock left by an interrupted NNCF build ({lock}, nothing written for {idle / 60:.0f} min)")


def _built(folder: Path) -> bool:
    from nncf.torch.quantization.extensions import QuantizedFunctionsCPULoader

    return (folder / f"{QuantizedFunctionsCPULoader.name()}.so").is_file()


@contextmanager
def _nncf_records() -> Iterator[list[logging.LogRecord]]:
    """NNCF's load chatter and fallback warning, captured (our one line replaces them) for the block."""
    records: list[logging.LogRecord] = []

    class _Capture(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            msg = record.getMessage()
            if msg.startswith(_CHATTER) or msg.startswith(_FALLBACK):
                records.append(record)
                return False
            return True

    logger = logging.getLogger("nncf")
    capture = _Capture()
    level = logger.level
    if logger.getEffectiveLevel() > logging.WARNING:  # quieted (the CLI does): still see the fallback's reason
        logger.setLevel(logging.WARNING)
    logger.filters.insert(0, capture)  # before any quieting filter (the CLI's drops NNCF's warnings)
    try:
        yield records
    finally:
        logger.removeFilter(capture)
        logger.setLevel(level)


def _fallback_reason(records: list[logging.LogRecord]) -> str:
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler: '{compiler}' is not on PATH"
    for rec in records:
        msg = rec.getMessage()
        if msg.startswith(_FALLBACK) and "Reason:" in msg:
            lines = [ln.strip() for ln in msg.split("Reason:", 1)[1].strip().splitlines() if ln.strip()]
            if lines:
                return lines[0] if len(lines[0]) <= 160 else lines[0][:157] + "..."
    return "the compiler failed"


def _loader_failed(exc: BaseException, folder: Path, timeout: int | None) -> SetupError:
    from nncf.torch.extensions import ExtensionLoaderTimeoutException

    lock = folder / "lock"
    stale = (f"a build killed earlier left {lock} behind (delete {folder} and retry), or " if lock.exists()
             else f"if a killed build left a lock there, delete {folder}; ")
    if isinstance(exc, ExtensionLoaderTimeoutException):
        return SetupError(f"NNCF's C++ extension did not build within {timeout} s: {stale}on a busy machine raise "
                          f"{TIMEOUT_ENV} (seconds, 0 = no limit) and retry")
    text = str(exc).strip().splitlines()
    detail = f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__
    return SetupError(f"loading NNCF's C++ extension failed ({detail}): check that g++ and ninja are on PATH, "
                      f"delete {folder} and retry")


def prepare_nncf(log: Callable[[str], None]) -> None:
    """Make NNCF's first quantization reliable: call once at the start of the INT8 stage.

    Raises the extension load timeout (see :func:`load_timeout`), removes a build lock that an
    interrupted build left behind (:func:`_clear_stale_lock`), builds NNCF's CPU kernels now
    (logging one line only when they are not cached yet), and reports NNCF's pure-torch fallback
    in one line when they cannot be built. A timeout or an unexpected loader failure is a
    :class:`SetupError`. Later calls in the same process do nothing.
    """
    global _kernels
    if _kernels is not None:
        return
    timeout = load_timeout()
    from nncf.torch.quantization.extensions import QuantizedFunctionsCPU
    from nncf.torch.quantization.reference import ReferenceQuantizedFunctions

    folder = extension_dir()
    if getattr(QuantizedFunctionsCPU, "_loaded_namespace", None) is None:
        _clear_stale_lock(folder, log)
        if not _built(folder):
            log(f"building NNCF's C++ extension once (first use, about a minute; cached in {folder})")
        with _nncf_records() as records:
            try:
                QuantizedFunctionsCPU.get("Quantize_forward")
            except Exception as exc:  # noqa: BLE001 - NNCF's timeout, or whatever torch's builder raised
                raise _loader_failed(exc, folder, timeout) from exc
    else:
        records = []
    if getattr(QuantizedFunctionsCPU, "_loaded_namespace", None) is ReferenceQuantizedFunctions:
        log(f"NNCF's C++ extension could not be built ({_fallback_reason(records)}): NNCF uses its pure-torch "
            f"kernels instead (same INT8 model, slower QAT); to build it install g++ and ninja, then delete {folder}")
        _kernels = "torch"
    else:
        _kernels = "c++"
