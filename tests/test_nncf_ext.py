"""NNCF's C++ extension prepared before the INT8 stage: timeout, one-line failures, fallback, once per process.

The loader is replaced (nothing is compiled here) but runs through NNCF's own ``ExtensionNamespace``,
so its real timeout machinery and caching are what these tests exercise.
"""
from __future__ import annotations

import gc
import logging
import threading
import time

import pytest

import nncf.torch.quantization.extensions as ext
from edgekd.errors import EdgekdError, InputError, SetupError
from edgekd.quantize import _nncf_ext
from edgekd.quantize._nncf_ext import DEFAULT_TIMEOUT_S, TIMEOUT_ENV, extension_dir, nncf_kernels, prepare_nncf
from nncf.torch.extensions import ExtensionNamespace
from nncf.torch.quantization.reference import ReferenceQuantizedFunctions


class _Kernels:  # stands in for the compiled module
    @staticmethod
    def Quantize_forward(*args):  # noqa: N802 - NNCF's name
        return None


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A process where NNCF's CPU extension was never loaded, with its cache in tmp_path."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    monkeypatch.setattr(_nncf_ext, "_kernels", None)
    calls: list[str] = []

    def install(load):
        class Loader(ext.QuantizedFunctionsCPULoader):
            @classmethod
            def load(cls):
                calls.append("load")
                return load()

        monkeypatch.setattr(ext, "QuantizedFunctionsCPU", ExtensionNamespace(Loader()))
        return calls

    return install


def test_timeout_default_is_set_and_a_user_value_is_kept(fresh, monkeypatch):
    fresh(lambda: _Kernels)
    import os

    prepare_nncf(lambda _: None)
    assert os.environ[TIMEOUT_ENV] == str(DEFAULT_TIMEOUT_S)

    monkeypatch.setattr(_nncf_ext, "_kernels", None)
    monkeypatch.setenv(TIMEOUT_ENV, "120")
    fresh(lambda: _Kernels)
    prepare_nncf(lambda _: None)
    assert os.environ[TIMEOUT_ENV] == "120"
    assert _nncf_ext.load_timeout() == 120
    monkeypatch.setenv(TIMEOUT_ENV, "0")
    assert _nncf_ext.load_timeout() is None  # NNCF's "no limit"


def test_unreadable_timeout_is_one_line(fresh, monkeypatch):
    fresh(lambda: _Kernels)
    monkeypatch.setenv(TIMEOUT_ENV, "ten minutes")
    with pytest.raises(InputError, match=f"{TIMEOUT_ENV}='ten minutes' must be a whole number") as e:
        prepare_nncf(lambda _: None)
    assert "\n" not in str(e.value)


def test_build_is_announced_only_when_not_cached(fresh):
    lines: list[str] = []
    calls = fresh(lambda: _Kernels)
    prepare_nncf(lines.append)
    assert calls == ["load"] and nncf_kernels() == "c++"
    assert len(lines) == 1 and lines[0].startswith("building NNCF's C++ extension once")
    assert str(extension_dir()) in lines[0]


def test_cached_build_is_silent(fresh):
    lines: list[str] = []
    fresh(lambda: _Kernels)
    (extension_dir() / "quantized_functions_cpu.so").write_bytes(b"")
    prepare_nncf(lines.append)
    assert lines == [] and nncf_kernels() == "c++"


def test_second_call_does_nothing(fresh):
    lines: list[str] = []
    calls = fresh(lambda: _Kernels)
    prepare_nncf(lines.append)
    prepare_nncf(lines.append)
    assert calls == ["load"] and len(lines) == 1


@pytest.fixture
def slow_build(fresh, monkeypatch):
    """A build that outlasts a 1 s timeout; released afterwards so NNCF's abandoned pool is collected cleanly."""
    monkeypatch.setenv(TIMEOUT_ENV, "1")
    release = threading.Event()
    fresh(lambda: release.wait(10) and _Kernels)
    yield
    release.set()
    time.sleep(0.2)
    gc.collect()


def test_timeout_is_one_setup_error(slow_build):
    with pytest.raises(SetupError) as e:  # NNCF's own thread-pool timeout fires after 1 s
        prepare_nncf(lambda _: None)
    msg = str(e.value)
    assert "\n" not in msg and isinstance(e.value, EdgekdError)
    assert "did not build within 1 s" in msg and TIMEOUT_ENV in msg and str(extension_dir()) in msg
    assert nncf_kernels() is None  # not marked prepared: the next call tries again


def test_leftover_lock_is_named(slow_build):
    (extension_dir() / "lock").write_text("")
    with pytest.raises(SetupError, match="left .*lock behind"):
        prepare_nncf(lambda _: None)


def test_stale_lock_is_removed_a_live_one_kept(fresh):
    import os

    lines: list[str] = []
    calls = fresh(lambda: _Kernels)
    folder = extension_dir()
    lock, obj = folder / "lock", folder / "functions_cpu.o"
    lock.write_text("")
    obj.write_bytes(b"")
    _nncf_ext._clear_stale_lock(folder, lines.append)  # just written: a live build
    assert lock.exists() and lines == []
    old = time.time() - _nncf_ext.STALE_LOCK_S - 60
    for p in (lock, obj, folder):
        os.utime(p, (old, old))
    prepare_nncf(lines.append)
    assert not lock.exists() and calls == ["load"]
    assert lines[0].startswith("removed a stale lock left by an interrupted NNCF build")


def test_loader_crash_is_one_setup_error(fresh):
    def boom():
        raise OSError("ninja: build stopped: subcommand failed.\nmore lines")

    fresh(boom)
    with pytest.raises(SetupError, match=r"loading NNCF's C\+\+ extension failed \(OSError: ninja: build stopped") as e:
        prepare_nncf(lambda _: None)
    assert "\n" not in str(e.value) and "g++" in str(e.value)


def test_pure_torch_fallback_is_said_in_one_line(fresh, caplog):
    def fallback():  # what NNCF's CPU loader does when compiling fails
        logging.getLogger("nncf").warning("Could not compile CPU quantization extensions. Falling back on torch "
                                          "native operations - ...\nReason: Error building extension 'x'")
        return ReferenceQuantizedFunctions

    lines: list[str] = []
    fresh(fallback)
    with caplog.at_level(logging.WARNING, logger="nncf"):
        prepare_nncf(lines.append)
    assert nncf_kernels() == "torch"
    assert len(lines) == 2 and "pure-torch kernels" in lines[1] and "Error building extension 'x'" in lines[1]
    assert not [r for r in caplog.records if "Could not compile" in r.getMessage()]  # NNCF's multi-line warning replaced
