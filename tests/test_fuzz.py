"""Fuzzing the input boundary with hypothesis: whatever the file or option, edgekd either accepts it
or raises an EdgekdError with a one-line message, never another exception (a traceback for the user).

Four boundaries: the .npz reader (random arrays, keys, dtypes and shapes, random bytes), the image
folder reader (random bytes and random valid images of every PIL mode as image files), the target
profile parser (random YAML documents), and the CLI's option parsing up to the point where the
pipeline starts (random option values through ``edgekd compress``).

Examples per test: 40 (60 for the CLI), derandomized so CI is repeatable; set
``EDGEKD_FUZZ_EXAMPLES=2000`` (and drop derandomization with ``EDGEKD_FUZZ_RANDOM=1``) to hunt deeper.
"""
from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgekd.config import Preprocessing
from edgekd.data import Dataset, load_dataset
from edgekd.data.npz import REQUIRED_KEYS
from edgekd.errors import EdgekdError
from edgekd.targets import TargetProfile, parse_profile

N = int(os.environ.get("EDGEKD_FUZZ_EXAMPLES", "40"))
DERANDOMIZE = os.environ.get("EDGEKD_FUZZ_RANDOM", "") in ("", "0")
FUZZ = settings(max_examples=N, deadline=None, derandomize=DERANDOMIZE, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SPLITS = ("train", "val", "test")


def accepted_or_edgekd_error(fn, *args, **kwargs):
    """Run fn; an EdgekdError must have a one-line message; any other exception propagates (test fails)."""
    try:
        return fn(*args, **kwargs)
    except EdgekdError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg and "\r" not in msg, repr(msg)
        return exc


# ---------------------------------------------------------------------------- .npz
def _valid_arrays(n: int = 6, size: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for s in SPLITS:
        out[f"{s}_images"] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        out[f"{s}_labels"] = (np.arange(n) % 2).reshape(-1, 1)
    return out


DTYPES = st.sampled_from([np.uint8, np.int8, np.int16, np.uint16, np.int64, np.uint64, np.float16, np.float32,
                          np.float64, np.bool_, np.complex64, "<U3", "S2"])
ARRAYS = hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=6))
KEYS = st.sampled_from([*REQUIRED_KEYS, "class_names", "extra", "a\nb"])
MUTATION = st.one_of(
    st.tuples(st.just("replace"), KEYS, ARRAYS),
    st.tuples(st.just("drop"), KEYS, st.none()),
    st.tuples(st.just("object"), KEYS, st.none()),
    st.tuples(st.just("labels"), st.sampled_from(SPLITS), st.lists(st.integers(-3, 2**40), min_size=6, max_size=6)),
    st.tuples(st.just("names"), st.just("class_names"), st.lists(st.text(max_size=4), max_size=4)),
)


@FUZZ
@given(mutations=st.lists(MUTATION, min_size=1, max_size=3), compressed=st.booleans(),
       image_size=st.sampled_from([None, 8, 12]), max_samples=st.sampled_from([None, 1, 3]))
def test_npz_loader_never_crashes(mutations, compressed, image_size, max_samples):
    arrays = _valid_arrays()
    for kind, key, value in mutations:
        if kind == "replace":
            arrays[key] = value
        elif kind == "drop":
            arrays.pop(key, None)
        elif kind == "object":
            arrays[key] = np.array([0, "x", None, 1.5, [1], {}], dtype=object)
        elif kind == "labels":
            arrays[f"{key}_labels"] = np.array(value, dtype=np.int64 if max(value) < 2**62 else np.uint64)
        else:
            arrays[key] = np.array(value, dtype=str)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fuzz.npz"
        (np.savez_compressed if compressed else np.savez)(path, **arrays)
        got = accepted_or_edgekd_error(load_dataset, path, Preprocessing(image_size=image_size),
                                       max_samples=max_samples)
    if isinstance(got, Dataset):  # accepted: the contract every later stage relies on
        assert got.num_classes >= 2 and got.channels in (1, 3)
        for s in SPLITS:
            split = getattr(got, s)
            assert split.images.ndim == 4 and bool(np.isfinite(split.images.numpy()).all())
            assert set(split.labels.tolist()) == set(range(got.num_classes))


@FUZZ
@given(head=st.sampled_from([b"", b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY", b"\x80\x04"]), body=st.binary(max_size=300))
def test_npz_loader_on_random_bytes(head, body):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "noise.npz"
        path.write_bytes(head + body)
        got = accepted_or_edgekd_error(load_dataset, path, Preprocessing())
    assert isinstance(got, EdgekdError)


@FUZZ
@given(member=st.sampled_from(["train_images.npy", "val_labels.npy", "class_names", "x.npy"]), body=st.binary(max_size=200),
       npy_head=st.booleans())
def test_npz_with_a_garbled_member(member, body, npy_head):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "garbled.npz"
        np.savez(path, **{k: v for k, v in _valid_arrays().items() if f"{k}.npy" != member})
        with zipfile.ZipFile(path, "a") as z:
            z.writestr(member, (b"\x93NUMPY\x01\x00" if npy_head else b"") + body)
        accepted_or_edgekd_error(load_dataset, path, Preprocessing())


# ---------------------------------------------------------------------------- image folders
MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F"]
FORMATS = [".png", ".tif", ".bmp", ".jpg"]


def _small_folder(root: Path) -> None:
    from PIL import Image

    for s in SPLITS:
        for c in ("a", "b"):
            (root / s / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((8, 8), 60 * i + 10, np.uint8)).save(root / s / c / f"{i}.png")


IMAGE = st.tuples(st.sampled_from(MODES), st.integers(1, 12), st.integers(1, 12), st.sampled_from(FORMATS))
RANDOM_FILE = st.tuples(st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"II*\x00", b"BM", b"\xff\xd8\xff"]),
                        st.binary(max_size=200), st.sampled_from(FORMATS))
PLACE = st.tuples(st.sampled_from(SPLITS), st.sampled_from(["a", "b"]), st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="/\x00"), min_size=1, max_size=6))


@FUZZ
@given(files=st.lists(st.tuples(PLACE, st.one_of(IMAGE, RANDOM_FILE)), min_size=1, max_size=3),
       image_size=st.sampled_from([None, 8]))
def test_folder_loader_never_crashes(files, image_size):
    from PIL import Image

    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "data"
        _small_folder(root)
        for (split, cls, stem), spec in files:
            assume(not stem.startswith(".") and stem not in (".", ".."))
            if len(spec) == 4:  # a real image in a random mode, size and format
                mode, w, h, ext = spec
                try:
                    Image.new(mode, (w, h), color=None).save(root / split / cls / f"{stem}{ext}")
                except (OSError, ValueError, KeyError):
                    assume(False)  # PIL cannot write that mode in that format: not an input a user can have
            else:
                head, body, ext = spec
                (root / split / cls / f"{stem}{ext}").write_bytes(head + body)
        got = accepted_or_edgekd_error(load_dataset, root, Preprocessing(image_size=image_size))
    if isinstance(got, Dataset):
        assert got.channels in (1, 3) and bool(np.isfinite(got.train.images.numpy()).all())


# ---------------------------------------------------------------------------- target profiles
FIELDS = ["name", "runtime", "precisions", "description", "threads", "batch", "input_size", "default_student",
          "dla_cores", "gpu_fallback", "latency_budget_ms", "memory_budget_mb", "jetpack", "tensorrt", "python",
          "workspace_mb", "hardware"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=8), st.sampled_from(["onnxruntime", "openvino", "tensorrt", "int8", "fp32", "8.2"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                           max_size=3), max_leaves=8)
VALID = {"name": "t", "runtime": "onnxruntime", "precisions": ["fp32"]}


FIELD_KEYS = st.sampled_from(FIELDS)


@FUZZ
@given(extra=st.dictionaries(st.one_of(FIELD_KEYS, FIELD_KEYS, FIELD_KEYS, st.text(max_size=6), st.integers()), VALUES,
                             max_size=5),
       drop=st.sets(st.sampled_from(list(VALID))))
def test_profile_parser_on_random_mappings(extra, drop):
    doc = {k: v for k, v in VALID.items() if k not in drop} | extra
    got = accepted_or_edgekd_error(parse_profile, yaml.safe_dump(doc, allow_unicode=True), source="fuzz.yaml")
    assert isinstance(got, (TargetProfile, EdgekdError))


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                      st.integers(1, 3000).map(lambda n: "[" * n), st.just("a: &x [*x]\n"),
                      st.just("!!python/object:os.system [ls]\n"), st.just("name: !!binary aGk=\n")))
def test_profile_parser_on_random_text(text):
    accepted_or_edgekd_error(parse_profile, text, source="fuzz.yaml")


# ---------------------------------------------------------------------------- CLI options
class _Reached(Exception):
    """Raised by the stand-in for compress() once every input was resolved (the pipeline would start)."""


@pytest.fixture(scope="module")
def cli_inputs(tmp_path_factory) -> tuple[Path, Path]:
    import torch

    d = tmp_path_factory.mktemp("cli_fuzz")
    np.savez(d / "d.npz", **_valid_arrays(n=8, size=16))
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 2)).eval()
    torch.onnx.export(net, torch.zeros(1, 1, 16, 16), str(d / "t.onnx"), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n"}})
    return d / "d.npz", d / "t.onnx"


NUMBER_TEXT = st.one_of(st.integers(-10**12, 10**12).map(str), st.floats(allow_nan=True).map(str),
                        st.text(max_size=6), st.sampled_from(["0", "1", "-1", "nan", "inf", "1e309", "0x10"]))
OPTIONS = {
    "--image-size": NUMBER_TEXT, "--mean": st.one_of(NUMBER_TEXT, st.just("0.5,0.5,0.5"), st.just(",")),
    "--std": st.one_of(NUMBER_TEXT, st.just("0,1")), "--max-samples": NUMBER_TEXT, "--max-auc-drop": NUMBER_TEXT,
    "--seed": NUMBER_TEXT, "--target": st.one_of(st.text(max_size=12), st.sampled_from(["intel-cpu", "jetson-nano",
                                                                                         "x.yaml", "../targets"])),
    "--student": st.text(max_size=12), "--teacher-weights": st.text(max_size=8),
}


@settings(max_examples=N * 3 // 2, deadline=None, derandomize=DERANDOMIZE, database=None,
          suppress_health_check=list(HealthCheck))
@given(chosen=st.dictionaries(st.sampled_from(list(OPTIONS)), st.none(), min_size=1, max_size=4).flatmap(
    lambda d: st.fixed_dictionaries({k: OPTIONS[k] for k in d})))
def test_cli_option_values_never_crash(cli_inputs, chosen, monkeypatch):
    from typer.testing import CliRunner

    import edgekd.api
    from edgekd.cli import app
    from edgekd.inputs import resolve_inputs

    def resolve_only(cfg, log=print):
        import torch

        torch.manual_seed(cfg.seed)  # what compress() does first with the seed
        np.random.seed(cfg.seed)
        resolve_inputs(cfg, log)
        raise _Reached

    monkeypatch.setattr(edgekd.api, "compress", resolve_only)
    npz, onnx = cli_inputs
    args = ["compress", "--teacher", str(onnx), "--data", str(npz), "--out", str(npz.parent / "out"), "-q"]
    for opt, value in chosen.items():
        args += [f"{opt}={value}"]
    result = CliRunner().invoke(app, args)
    if isinstance(result.exception, _Reached):
        return
    assert result.exit_code == 2, (args, result.output, result.exception)
    err = result.stderr.strip()
    if err.startswith("error: "):  # an edgekd error: one line
        assert "\n" not in err, err
    else:  # click rejected the value itself (not an int, not a float): its usage message, no traceback
        assert "Invalid value" in err or "No such option" in err, err
    assert "Traceback" not in result.output
    assert not (npz.parent / "out").exists()
