"""The standalone on-device runner (edgekd/device/runner.py), as a bundle ships it.

The runner must run on a Jetson Nano (Python 3.6, numpy, TensorRT, no torch, no edgekd). Here
it is checked for Python 3.6 syntax (vermin and ``ast``), run as a subprocess from a copied
bundle with ONNX Runtime and OpenVINO (its metrics must equal edgekd's own on the same logits,
and it must not import torch or edgekd), and its TensorRT code path is driven against a
*stand-in* tensorrt module and a stand-in libcudart (NOT TensorRT: no NVIDIA GPU here), for
the TensorRT 8.2 binding API and the 10.x named-tensor API.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from edgekd.device import RUNNER_PATH, RUNNER_VERSION, copy_runner, load_device_result
from edgekd.errors import InputError
from edgekd.metrics.classification import evaluate_logits

FORBIDDEN_TOP = {"torch", "torchvision", "timm", "edgekd", "nncf", "torch_pruning"}
STDLIB_OR_NUMPY = {"argparse", "ctypes", "gc", "glob", "hashlib", "json", "math", "os", "platform", "re", "shutil",
                   "socket", "subprocess", "sys", "time", "datetime", "numpy"}
RUNTIME_MODULES = {"tensorrt", "onnxruntime", "openvino"}
CHW = (1, 12, 12)


# ----------------------------------------------------------------------------- helpers

def load_runner_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("edgekd_device_runner_under_test", RUNNER_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clean_env(**extra: str) -> dict[str, str]:
    """No PYTHONPATH and nothing from the test process: the runner sees what a device would."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def run_runner(bundle: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -X importtime runner.py ARGS`` in the bundle folder, with a clean environment."""
    return subprocess.run([sys.executable, "-X", "importtime", "runner.py", *args], cwd=bundle, env=env or clean_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)


def imported_modules(stderr: str) -> set[str]:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("import time:")]
    assert lines and "imported package" in lines[0], "python -X importtime wrote no import log"
    return {ln.split("|")[-1].strip() for ln in lines[1:]}


def messages(stderr: str) -> list[str]:
    """stderr without the import log, the runner's progress lines and the TensorRT stand-in's log."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(("import time:", "[runner]", "[TRT]"))]


def write_sample(path: Path, n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, *CHW)).astype(np.float32)
    labels = rng.integers(0, classes, n).astype(np.int64)
    labels[:classes] = np.arange(classes)  # every class present: the AUC is defined
    np.savez(path, images=images, labels=labels, class_names=np.array([f"class{i}" for i in range(classes)]))
    return images, labels


def export_tiny_onnx(path: Path, classes: int) -> None:
    import torch

    model = torch.nn.Sequential(
        torch.nn.Conv2d(CHW[0], 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(4, classes),
    ).eval()
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript-based ONNX export"
        torch.onnx.export(model, (torch.randn(1, *CHW),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"], dynamic_axes=axes)


def ort_logits(onnx_path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": images[i:i + 1]})[0] for i in range(len(images))])


@pytest.fixture(scope="module", params=[2, 3], ids=["binary", "3-class"])
def bundle(request, tmp_path_factory) -> dict:
    """A bundle folder: runner.py (copied as the bundle writer does), model.onnx, sample.npz."""
    classes = request.param
    folder = tmp_path_factory.mktemp(f"bundle{classes}")
    copy_runner(folder)
    export_tiny_onnx(folder / "model.onnx", classes)
    images, labels = write_sample(folder / "sample.npz", n=41, classes=classes, seed=classes)
    return {"dir": folder, "images": images, "labels": labels, "classes": classes}


def check_document(doc: dict, *, runtime: str, model: Path, batch: int, iterations: int, warmup: int, n: int) -> None:
    assert doc["runner_version"] == RUNNER_VERSION and doc["measured_on"] == "device"
    assert doc["runtime"]["name"] == runtime and doc["runtime"]["version"]
    assert doc["model"]["path"] == str(model.resolve())
    assert doc["model"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert (doc["batch"], doc["iterations"], doc["warmup"], doc["sample"]["n"]) == (batch, iterations, warmup, n)
    lat = doc["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and lat["mean"] > 0
    assert doc["throughput_ips"] == pytest.approx(batch * 1000.0 / lat["p50"])
    for key in ("hostname", "platform", "machine", "cpu", "jetson_model", "l4t", "jetpack"):
        assert key in doc["device"]


# ----------------------------------------------------------------------------- Python 3.6 and standalone

def test_runner_has_no_python37_syntax_or_library_use_per_vermin():
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent)) or shutil.which("vermin")
    if vermin is None:
        pytest.skip("vermin is not installed (pip install 'vermin==1.9.2')")
    out = subprocess.run([vermin, "--no-tips", "--violations", "-t=3.6-", str(RUNNER_PATH)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert out.returncode == 0, out.stdout
    assert "Target versions not met" not in out.stdout


def test_vermin_would_catch_a_python37_construct(tmp_path):
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent)) or shutil.which("vermin")
    if vermin is None:
        pytest.skip("vermin is not installed")
    bad = tmp_path / "bad.py"
    bad.write_text("import subprocess\nsubprocess.run(['true'], capture_output=True)\n")
    out = subprocess.run([vermin, "--no-tips", "--violations", "-t=3.6-", str(bad)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert out.returncode != 0 and "capture_output" in out.stdout


def test_runner_parses_with_the_python36_grammar():
    source = RUNNER_PATH.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(RUNNER_PATH), feature_version=(3, 6))
    futures = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "__future__"
               for a in n.names]
    assert "annotations" not in futures
    with pytest.raises(SyntaxError):  # the check is real: 3.8 syntax fails under the 3.6 grammar
        ast.parse("if (y := 1):\n    pass\n", feature_version=(3, 6))


def test_runner_imports_only_stdlib_numpy_and_the_device_runtimes():
    tree = ast.parse(RUNNER_PATH.read_text(encoding="utf-8"))
    top, anywhere = set(), set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        anywhere |= {n.split(".")[0] for n in names}
        if node in tree.body:
            top |= {n.split(".")[0] for n in names}
    assert top <= STDLIB_OR_NUMPY, top - STDLIB_OR_NUMPY
    assert anywhere <= STDLIB_OR_NUMPY | RUNTIME_MODULES, anywhere - STDLIB_OR_NUMPY - RUNTIME_MODULES
    assert "dataclasses" not in anywhere


# ----------------------------------------------------------------------------- metrics

def test_auc_matches_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    runner = load_runner_module()
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, 200) / 4.0  # many ties
    labels = rng.integers(0, 2, 200)
    assert runner.binary_auc(scores, labels == 1) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.isnan(runner.binary_auc(scores, np.zeros(200, bool)))


@pytest.mark.parametrize("classes", [2, 4])
def test_classification_metrics_equal_edgekd_metrics(classes):
    runner = load_runner_module()
    rng = np.random.default_rng(classes)
    logits = rng.standard_normal((150, classes)).astype(np.float32)
    labels = rng.integers(0, classes, 150)
    ours, ref = runner.classification_metrics(logits, labels), evaluate_logits(logits, labels)
    assert ours["accuracy"] == pytest.approx(ref.accuracy, abs=1e-12)
    assert ours["auc"] == pytest.approx(ref.auc, abs=1e-12)


@pytest.mark.parametrize("release, expected", [
    ("# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, DATE: Sat Feb 19 2022",
     ("32.7.1", "4.6.1")),
    ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64", ("35.4.1", "5.1.2")),
    ("# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64", ("36.3.0", "6.0")),
    ("# R99 (release), REVISION: 1, GCID: 1", ("99.1.0", None)),
    ("", (None, None)),
])
def test_l4t_and_jetpack_from_nv_tegra_release(release, expected):
    assert load_runner_module().l4t_release(release) == expected


# ----------------------------------------------------------------------------- ONNX Runtime / OpenVINO, end to end

def test_onnxruntime_run_matches_direct_onnxruntime_and_imports_no_torch(bundle):
    folder = bundle["dir"]
    res = run_runner(folder, "--model", "model.onnx", "--runtime", "onnxruntime", "--sample", "sample.npz",
                     "--iterations", "20", "--warmup", "5", "--batch", "4", "--threads", "1", "--out", "out/device.json")
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(res.stdout)  # stdout is the JSON document alone
    check_document(doc, runtime="onnxruntime", model=folder / "model.onnx", batch=4, iterations=20, warmup=5, n=41)
    assert doc["runtime"]["precision"] == "fp32" and doc["runtime"]["intra_op_num_threads"] == 1
    assert json.loads((folder / "out" / "device.json").read_text()) == doc
    modules = imported_modules(res.stderr)
    assert "numpy" in modules and "onnxruntime" in modules
    assert not {m for m in modules if m.split(".")[0] in FORBIDDEN_TOP}
    ref = evaluate_logits(ort_logits(folder / "model.onnx", bundle["images"]), bundle["labels"])
    assert doc["metrics"]["accuracy"] == pytest.approx(ref.accuracy, abs=1e-9)
    assert doc["metrics"]["auc"] == pytest.approx(ref.auc, abs=1e-9)
    assert load_device_result(folder / "out" / "device.json") == doc


def test_openvino_ir_run_matches_direct_onnxruntime(bundle):
    import openvino as ov

    folder = bundle["dir"]
    xml = folder / "model.xml"
    if not xml.exists():
        ov.save_model(ov.convert_model(str(folder / "model.onnx")), str(xml), compress_to_fp16=False)
    res = run_runner(folder, "--model", "model.xml", "--iterations", "10", "--warmup", "2", "--threads", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(res.stdout)
    check_document(doc, runtime="openvino", model=xml, batch=1, iterations=10, warmup=2, n=41)
    assert doc["runtime"]["inference_precision_hint"] == "f32"  # never the CPU's silent bf16 default
    assert doc["sample"]["path"] == str((folder / "sample.npz").resolve())  # found next to the model
    assert not {m for m in imported_modules(res.stderr) if m.split(".")[0] in FORBIDDEN_TOP}
    ref = evaluate_logits(ort_logits(folder / "model.onnx", bundle["images"]), bundle["labels"])
    assert doc["metrics"]["accuracy"] == pytest.approx(ref.accuracy, abs=1e-9)
    assert doc["metrics"]["auc"] == pytest.approx(ref.auc, abs=1e-6)


# ----------------------------------------------------------------------------- errors: one line, exit 2

def _bad_sample(folder: Path) -> str:
    np.savez(folder / "wrong.npz", images=np.zeros((3, 3, 20, 20), np.float32), labels=np.zeros(3, np.int64))
    return "wrong.npz"


def _no_labels(folder: Path) -> str:
    np.savez(folder / "nolabels.npz", images=np.zeros((3, *CHW), np.float32))
    return "nolabels.npz"


@pytest.mark.parametrize("args, expected", [
    (["--model", "missing.onnx"], "not found"),
    (["--model", "model.onnx", "--runtime", "tensorrt"], "not installed"),
    (["--model", "model.onnx", "--runtime", "onnxruntime", "--sample", _bad_sample], "sample shape mismatch"),
    (["--model", "model.onnx", "--runtime", "onnxruntime", "--sample", _no_labels], "lacks labels"),
    (["--model", "sample.npz"], "suffix"),
    (["--model", "model.onnx", "--runtime", "onnxruntime", "--batch", "0"], "--batch"),
], ids=["missing-model", "runtime-not-installed", "shape-mismatch", "sample-without-labels", "bad-suffix", "batch-0"])
def test_user_errors_exit_2_with_one_line(bundle, args, expected):
    folder = bundle["dir"]
    args = [a(folder) if callable(a) else a for a in args]
    res = subprocess.run([sys.executable, "runner.py", *args], cwd=folder, env=clean_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert res.returncode == 2 and res.stdout == ""
    lines = messages(res.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], res.stderr


def test_main_in_process_gives_stdout_back(bundle):
    code = ("import sys; sys.path.insert(0, '.'); import runner; "
            "rc = runner.main(['--model', 'model.onnx', '--runtime', 'onnxruntime', '--iterations', '2', '--warmup', '0']); "
            "print('AFTER', rc)")
    res = subprocess.run([sys.executable, "-c", code], cwd=bundle["dir"], env=clean_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    body, _, tail = res.stdout.rstrip().rpartition("\n")
    assert tail == "AFTER 0", res.stderr[-2000:]
    assert json.loads(body)["iterations"] == 2


def test_load_device_result_rejects_what_the_runner_did_not_write(tmp_path):
    host = tmp_path / "host.json"
    host.write_text(json.dumps({"measured_on": "host"}))
    with pytest.raises(InputError, match="lacks"):
        load_device_result(host)
    with pytest.raises(InputError, match="not found"):
        load_device_result(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="not readable JSON"):
        load_device_result(tmp_path / "bad.json")


def test_copy_runner_writes_an_identical_executable_copy(tmp_path):
    dest = copy_runner(tmp_path / "b")
    assert dest.read_bytes() == RUNNER_PATH.read_bytes() and os.access(dest, os.X_OK)


# ----------------------------------------------------------------------------- TensorRT path, against stand-ins
# NOT TensorRT and NOT CUDA: a fake ``tensorrt`` module whose "engine" is JSON holding a linear
# classifier, exposing only the API of the version it pretends to be, and a fake libcudart whose
# "device memory" is malloc'ed host memory that rejects copies in the wrong direction. They check
# the runner's own control flow (binding vs named-tensor API, shapes, pointers, copy directions,
# engine reuse/build), not TensorRT's behaviour.

FAKE_CUDART_C = r"""
#include <stdlib.h>
#include <string.h>
static void* blocks[64]; static int nblocks = 0;
static int owned(const void* p) { for (int i = 0; i < nblocks; i++) if (blocks[i] == p) return 1; return 0; }
int cudaRuntimeGetVersion(int* v) { *v = 10020; return 0; }
const char* cudaGetErrorString(int e) { return "fake cudart error"; }
int cudaMalloc(void** p, size_t n) { *p = malloc(n); blocks[nblocks++] = *p; return 0; }
int cudaFree(void* p) { if (p && !owned(p)) return 1; if (p) free(p); return 0; }
int cudaMemcpy(void* d, const void* s, size_t n, int kind) {
    if ((kind == 1 && (!owned(d) || owned(s))) || (kind == 2 && (!owned(s) || owned(d))) || (kind != 1 && kind != 2))
        return 21;
    memcpy(d, s, n); return 0; }
int cudaMemcpyAsync(void* d, const void* s, size_t n, int kind, void* stream) {
    return stream ? cudaMemcpy(d, s, n, kind) : 400; }
int cudaStreamCreate(void** s) { *s = malloc(8); return 0; }
int cudaStreamSynchronize(void* s) { return s ? 0 : 400; }
int cudaStreamDestroy(void* s) { free(s); return 0; }
"""

FAKE_TENSORRT = '''
"""Stand-in for the tensorrt Python module (see tests/test_device_runner.py). Not TensorRT."""
import ctypes, json, os
import numpy as np

__version__ = os.environ["FAKE_TRT_VERSION"]
_V = tuple(int(p) for p in __version__.split(".")[:2])

class Logger(object):
    WARNING = 2
    def __init__(self, severity=None):
        pass

def nptype(dtype):
    return {"float": np.float32, "half": np.float16}[dtype]

class TensorIOMode(object):
    INPUT, OUTPUT = "in", "out"

class Runtime(object):
    def __init__(self, logger):
        print("[TRT] stand-in log line on stdout")  # the runner must keep stdout for the JSON alone
        os.write(1, b"[TRT] native-style write to fd 1\\n")
    def deserialize_cuda_engine(self, data):
        try:
            return Engine(json.loads(data.decode()))
        except ValueError:
            return None

def _array(ptr, shape, dtype):
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_char * n).from_address(ptr), dtype=dtype).reshape(shape)

class Engine(object):
    def __init__(self, spec):
        self.spec, self.names = spec, [spec["input"], spec["output"]]
        self.shapes = [[spec["batch"]] + spec["chw"], [spec["batch"], len(spec["weights"])]]
        self.dtypes = [spec.get("input_dtype", "float"), "float"]
    def create_execution_context(self):
        return Context(self)
    if _V >= (8, 5):
        num_io_tensors = 2
        def get_tensor_name(self, i): return self.names[i]
        def get_tensor_mode(self, name): return TensorIOMode.INPUT if name == self.names[0] else TensorIOMode.OUTPUT
        def get_tensor_shape(self, name): return list(self.shapes[self.names.index(name)])
        def get_tensor_dtype(self, name): return self.dtypes[self.names.index(name)]
    if _V < (10, 0):
        num_bindings = 2
        def get_binding_name(self, i): return self.names[i]
        def get_binding_index(self, name): return self.names.index(name)
        def binding_is_input(self, i): return i == 0
        def get_binding_shape(self, i): return list(self.shapes[i])
        def get_binding_dtype(self, i): return self.dtypes[i]

class Context(object):
    def __init__(self, engine):
        self.engine, self.shapes, self.addresses = engine, [list(s) for s in engine.shapes], {}
    def _set(self, shape):
        if len(shape) != 4 or any(a >= 0 and a != b for a, b in zip(self.engine.shapes[0], shape)):
            return False
        self.shapes = [list(shape), [shape[0], self.shapes[1][1]]]
        return True
    def _run(self, inp, out):
        if any(d < 0 for d in self.shapes[0]):
            raise RuntimeError("input shape not set")
        x = _array(inp, self.shapes[0], nptype(self.engine.dtypes[0])).astype(np.float32).reshape(self.shapes[0][0], -1)
        w, b = np.asarray(self.engine.spec["weights"], np.float32), np.asarray(self.engine.spec["bias"], np.float32)
        _array(out, self.shapes[1], np.float32)[...] = x @ w.T + b
        with open(os.environ["FAKE_TRT_CALLS"], "a") as f:
            f.write(self.engine.spec["api_used"] + "\\n")
        return True
    if _V >= (8, 5):
        def set_input_shape(self, name, shape): return self._set(shape)
        def get_tensor_shape(self, name): return list(self.shapes[self.engine.names.index(name)])
        def set_tensor_address(self, name, ptr): self.addresses[name] = int(ptr)
        def execute_async_v3(self, stream):
            assert isinstance(stream, int) and stream != 0
            self.engine.spec["api_used"] = "v3"
            return self._run(self.addresses[self.engine.names[0]], self.addresses[self.engine.names[1]])
    if _V < (10, 0):
        def set_binding_shape(self, i, shape): return self._set(shape)
        def get_binding_shape(self, i): return list(self.shapes[i])
        def execute_v2(self, bindings):
            self.engine.spec["api_used"] = "v2"
            return self._run(int(bindings[0]), int(bindings[1]))

# Build side: the "ONNX file" is the engine spec as JSON; "qdq": true adds Q/DQ layers.
class NetworkDefinitionCreationFlag(object):
    EXPLICIT_BATCH, STRONGLY_TYPED = 0, 1

class BuilderFlag(object):
    if _V < (11, 0):  # TensorRT 11 removed them: precision comes from the ONNX
        FP16, INT8 = "FP16", "INT8"

class MemoryPoolType(object):
    WORKSPACE = "WORKSPACE"

class LayerType(object):
    QUANTIZE, DEQUANTIZE, CONVOLUTION = "Q", "DQ", "CONV"

class _Obj(object):
    def __init__(self, **kw): self.__dict__.update(kw)

class Network(object):
    def __init__(self, flags):
        if _V < (10, 0) and not flags & 1:
            raise RuntimeError("ONNX networks need the EXPLICIT_BATCH flag before TensorRT 10")
        if _V >= (11, 0) and not flags & 2:
            raise RuntimeError("TensorRT 11 networks are strongly typed")
        self.spec, self.layers = None, []
    num_layers = property(lambda self: len(self.layers))
    def get_layer(self, i): return self.layers[i]
    def get_input(self, i): return _Obj(name=self.spec["input"], shape=[-1] + self.spec["chw"])

class OnnxParser(object):
    def __init__(self, network, logger): self.network, self.num_errors = network, 0
    def parse_from_file(self, path):
        with open(path) as f:
            self.network.spec = json.load(f)
        qdq = [_Obj(type=LayerType.QUANTIZE), _Obj(type=LayerType.DEQUANTIZE)] if self.network.spec.get("qdq") else []
        self.network.layers = [_Obj(type=LayerType.CONVOLUTION)] + qdq
        return True

class Config(object):
    def __init__(self): self.flags, self.profiles, self.workspace = set(), [], None
    if _V >= (8, 4):
        def set_memory_pool_limit(self, pool, size): self.workspace = size
    def set_flag(self, flag): self.flags.add(flag)
    def add_optimization_profile(self, profile): self.profiles.append(profile)

class Builder(object):
    platform_has_fast_fp16 = True
    def __init__(self, logger): pass
    def create_network(self, flags): return Network(flags)
    def create_builder_config(self): return Config()
    def create_optimization_profile(self):
        profile = _Obj()
        profile.set_shape = lambda name, lo, opt, hi: setattr(profile, "shape", list(opt))
        return profile
    def build_serialized_network(self, network, config):
        workspace = config.workspace or getattr(config, "max_workspace_size", None)
        with open(os.environ["FAKE_TRT_CALLS"], "a") as f:
            f.write("built " + " ".join(sorted(config.flags)) + " workspace=%d\\n" % workspace)
        return json.dumps(dict(network.spec, batch=config.profiles[0].shape[0])).encode()
'''


@pytest.fixture(scope="module")
def fake_trt(tmp_path_factory) -> dict:
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("no C compiler for the stand-in libcudart")
    root = tmp_path_factory.mktemp("fake_trt")
    (root / "tensorrt").mkdir()
    (root / "tensorrt" / "__init__.py").write_text(FAKE_TENSORRT)
    (root / "cudart.c").write_text(FAKE_CUDART_C)
    lib = root / "libcudart_fake.so"
    subprocess.run([shutil.which("gcc") or "cc", "-shared", "-fPIC", "-o", str(lib), str(root / "cudart.c")],
                   check=True, timeout=60)
    return {"pythonpath": str(root), "cudart": str(lib), "calls": root / "calls.log"}


def _trt_bundle(folder: Path, *, batch: int, input_dtype: str, classes: int = 3) -> tuple[dict, np.ndarray, np.ndarray]:
    copy_runner(folder)
    images, labels = write_sample(folder / "sample.npz", n=23, classes=classes, seed=7)
    rng = np.random.default_rng(3)
    spec = {"input": "input", "output": "logits", "chw": list(CHW), "batch": batch, "input_dtype": input_dtype,
            "weights": rng.standard_normal((classes, int(np.prod(CHW)))).tolist(),
            "bias": rng.standard_normal(classes).tolist()}
    x = images.astype(np.float16).astype(np.float32) if input_dtype == "half" else images
    logits = x.reshape(len(x), -1) @ np.asarray(spec["weights"], np.float32).T + np.asarray(spec["bias"], np.float32)
    return spec, logits, labels


@pytest.mark.parametrize("version, api", [("8.2.1", "v2"), ("8.6.1", "v3"), ("10.3.0", "v3")])
@pytest.mark.parametrize("batch, engine_batch, input_dtype", [(1, 1, "float"), (4, -1, "half")],
                         ids=["static-b1-fp32", "dynamic-b4-fp16-input"])
def test_tensorrt_path_against_stand_ins(fake_trt, tmp_path, version, api, batch, engine_batch, input_dtype):
    spec, logits, labels = _trt_bundle(tmp_path, batch=engine_batch, input_dtype=input_dtype)
    (tmp_path / "model.engine").write_text(json.dumps(spec))
    env = clean_env(PYTHONPATH=fake_trt["pythonpath"], EDGEKD_CUDART=fake_trt["cudart"], FAKE_TRT_VERSION=version,
                    FAKE_TRT_CALLS=str(fake_trt["calls"]))
    fake_trt["calls"].write_text("")
    res = run_runner(tmp_path, "--model", "model.engine", "--iterations", "6", "--warmup", "2", "--batch", str(batch),
                     env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(res.stdout)
    check_document(doc, runtime="tensorrt", model=tmp_path / "model.engine", batch=batch, iterations=6, warmup=2, n=23)
    assert doc["runtime"]["execution_api"] == ("execute_v2" if api == "v2" else "execute_async_v3")
    assert "stand-in log line" in res.stderr and "native-style write" in res.stderr
    assert doc["runtime"]["cuda_runtime"] == "10.2" and doc["runtime"]["version"] == version
    assert set(fake_trt["calls"].read_text().split()) == {api}  # every call went through that API
    ref = evaluate_logits(logits, labels)
    assert doc["metrics"]["accuracy"] == pytest.approx(ref.accuracy, abs=1e-9)
    assert doc["metrics"]["auc"] == pytest.approx(ref.auc, abs=1e-6)


def test_tensorrt_onnx_model_builds_the_engine_with_build_engine_sh_then_reuses_it(fake_trt, tmp_path):
    spec, logits, labels = _trt_bundle(tmp_path, batch=1, input_dtype="float")
    (tmp_path / "model.onnx").write_bytes(b"stand-in onnx")
    (tmp_path / "engine.json").write_text(json.dumps(spec))
    (tmp_path / "build_engine.sh").write_text(
        "#!/bin/bash\n# trtexec --onnx=model.onnx --saveEngine=model.fp16.engine --fp16\n"
        "echo building >&1\ncp engine.json model.fp16.engine\n")
    env = clean_env(PYTHONPATH=fake_trt["pythonpath"], EDGEKD_CUDART=fake_trt["cudart"], FAKE_TRT_VERSION="10.3.0",
                    FAKE_TRT_CALLS=str(fake_trt["calls"]))
    args = ("--model", "model.onnx", "--iterations", "3", "--warmup", "1")
    first = run_runner(tmp_path, *args, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    doc = json.loads(first.stdout)  # build_engine.sh's own stdout went to stderr
    assert doc["runtime"]["engine_build"]["built_by"] == "build_engine.sh" and doc["runtime"]["precision"] == "fp16"
    assert doc["model"]["path"] == str((tmp_path / "model.fp16.engine").resolve())
    assert "building" in first.stderr
    assert doc["metrics"]["accuracy"] == pytest.approx(evaluate_logits(logits, labels).accuracy, abs=1e-9)
    second = run_runner(tmp_path, *args, env=env)
    assert second.returncode == 0 and "engine_build" not in json.loads(second.stdout)["runtime"]


def test_unloadable_engine_is_one_line_error(fake_trt, tmp_path):
    _trt_bundle(tmp_path, batch=1, input_dtype="float")
    (tmp_path / "model.engine").write_bytes(b"\x00 not an engine")
    env = clean_env(PYTHONPATH=fake_trt["pythonpath"], EDGEKD_CUDART=fake_trt["cudart"], FAKE_TRT_VERSION="8.2.1",
                    FAKE_TRT_CALLS=str(fake_trt["calls"]))
    res = run_runner(tmp_path, "--model", "model.engine", env=env)
    lines = messages(res.stderr)
    assert res.returncode == 2 and len(lines) == 1 and "rebuild it on this device" in lines[0]


def test_real_libcudart_bindings_load_and_fail_cleanly_without_a_gpu():
    """Where a CUDA runtime is installed but no GPU is (this workplace), every symbol the runner
    binds must exist in the real libcudart and the failure must be one controlled line."""
    import ctypes.util

    if ctypes.util.find_library("cudart") is None:
        pytest.skip("no libcudart on this machine")
    runner = load_runner_module()
    try:
        cuda = runner.CudaRuntime()
    except runner.RunnerError as exc:
        assert "CUDA call cudaFree(0)" in str(exc) and "\n" not in str(exc)
    else:  # a machine with a GPU: a real round trip
        ptr = cuda.malloc(16)
        src, dst = np.arange(4, dtype=np.float32), np.zeros(4, np.float32)
        cuda.copy(ptr, src.ctypes.data, 16, cuda.H2D)
        cuda.copy(dst.ctypes.data, ptr, 16, cuda.D2H)
        cuda.free(ptr)
        assert (dst == src).all()


FAKE_TRTEXEC = '''
import json, os, sys
args = dict((a[2:].split("=", 1) + [""])[:2] for a in sys.argv[1:])
with open(args["onnx"]) as f:
    spec = json.load(f)
spec["batch"] = int(args["shapes"].split(":")[1].split("x")[0]) if "shapes" in args else 1
with open(args["saveEngine"], "w") as f:
    json.dump(spec, f)
with open(os.environ["FAKE_TRT_CALLS"], "a") as f:
    f.write("trtexec " + " ".join(sys.argv[1:]) + "\\n")
'''


@pytest.mark.parametrize("builder", ["python-api", "trtexec"])
@pytest.mark.parametrize("version", ["8.2.1", "10.3.0", "11.0.0"])
def test_tensorrt_onnx_without_build_engine_sh_builds_fp16_int8_for_qdq(fake_trt, tmp_path, builder, version):
    spec, logits, labels = _trt_bundle(tmp_path, batch=-1, input_dtype="float")
    (tmp_path / "model.onnx").write_text(json.dumps({**spec, "qdq": True}))  # the stand-in parser reads JSON
    path = os.environ.get("PATH", "/usr/bin:/bin")
    if builder == "trtexec":
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "trtexec").write_text(f"#!{sys.executable}\n{FAKE_TRTEXEC}")
        (bin_dir / "trtexec").chmod(0o755)
        path = f"{bin_dir}:{path}"
    env = clean_env(PATH=path, PYTHONPATH=fake_trt["pythonpath"], EDGEKD_CUDART=fake_trt["cudart"],
                    FAKE_TRT_VERSION=version, FAKE_TRT_CALLS=str(fake_trt["calls"]))
    fake_trt["calls"].write_text("")
    res = run_runner(tmp_path, "--model", "model.onnx", "--batch", "2", "--iterations", "3", "--warmup", "1", env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(res.stdout)
    assert doc["runtime"]["engine_build"]["built_by"] == {"python-api": "tensorrt-python-api"}.get(builder, builder)
    assert doc["model"]["path"] == str((tmp_path / "model.engine").resolve())
    calls = fake_trt["calls"].read_text()
    if version.startswith("11"):  # the same table as the host's: no precision flags, strongly typed
        assert doc["runtime"]["precision"].startswith("strongly typed")
        assert "--fp16" not in calls.split() and "--int8" not in calls.split()
        if builder == "trtexec":
            assert "--stronglyTyped" in calls.split() and "--memPoolSize=workspace:512M" in calls.split()
        else:
            assert f"built  workspace={512 << 20}" in calls
        return
    assert doc["runtime"]["precision"] == "fp16+int8"  # Q/DQ in the network: INT8 on, FP16 for the float layers
    if builder == "trtexec":  # the host's build_engine.sh gets the same arguments (one table, in the runner)
        workspace = {"8.2.1": "--workspace=512", "10.3.0": "--memPoolSize=workspace:512M"}[version]
        for flag in ("--fp16", "--int8", "--shapes=input:2x1x12x12", workspace):
            assert flag in calls.split()
    else:
        assert f"built FP16 INT8 workspace={512 << 20}" in calls
    assert doc["metrics"]["auc"] == pytest.approx(evaluate_logits(logits, labels).auc, abs=1e-6)
