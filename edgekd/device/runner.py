#!/usr/bin/env python3
"""edgekd on-device benchmark runner: latency, accuracy and ROC AUC of one model, measured where it runs.

A bundle written by ``edgekd compress`` for a device target carries a copy of this file next to
``model.onnx`` and ``sample.npz``. It is ONE standalone file that needs only numpy and the
device runtime (TensorRT, ONNX Runtime or OpenVINO): no torch, no edgekd. Its syntax is
Python 3.6 (JetPack 4.6 on the Jetson Nano); a test checks that with vermin and ``ast``.

    python3 runner.py --model model.engine --sample sample.npz --out device.json

It warms the model up, times ``--iterations`` calls of one ``--batch`` (time.perf_counter, gc
paused), then runs the whole sample for accuracy and ROC AUC, and prints ONE JSON document on
stdout (progress and errors go to stderr; errors are one line and exit code 2).

Binary tasks are scored at the operating point the host chose on val, read from the bundle's
``labels.json`` next to the model (``--threshold`` overrides it; 0.5 only when neither gives
one); the JSON document's ``threshold`` says which value was used and where it came from.
Segmentation masks are the per-pixel argmax, then, when ``labels.json`` records ``min_region``
(the host kept it on val), every 8-connected region of class c smaller than ``min_region[c]``
pixels becomes background (``--min-region`` overrides it; 0 keeps every region).

What was executed where: the ONNX Runtime and OpenVINO paths run in edgekd's tests on an x86
host. The TensorRT path (engine build through build_engine.sh / trtexec / the TensorRT Python
API, and inference through libcudart via ctypes: TensorRT 8.x ``execute_v2`` with bindings,
TensorRT 8.5+/10.x ``set_tensor_address`` + ``execute_async_v3``) was written against NVIDIA's
TensorRT 8.x/10.x Python API documentation and has NOT been executed by edgekd's tests: the
machine that built it has no NVIDIA GPU and no TensorRT.
"""
import argparse
import ctypes
import ctypes.util
import gc
import glob
import hashlib
import json
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone

import numpy as np

RUNNER_VERSION = "1.3.0"  # 1.3: segmentation masks drop regions below labels.json min_region; 1.2: segmentation models (masks, Dice); 1.1: the binary threshold defaults to the bundle's labels.json; "threshold" in the output
EXIT_BAD_INPUT = 2
RUNTIMES = ("auto", "tensorrt", "onnxruntime", "openvino")
LABELS = "labels.json"  # written by the bundle next to the model: class names and the operating point
INSTALL_HINTS = {
    "tensorrt": "TensorRT ships with JetPack (python3-libnvinfer); on a PC: pip install tensorrt",
    "onnxruntime": "pip3 install onnxruntime (on a Jetson: the onnxruntime-gpu wheel for your JetPack from the Jetson Zoo)",
    "openvino": "pip3 install openvino",
}
# L4T release -> JetPack release (NVIDIA's JetPack archive); the runner reports both.
L4T_TO_JETPACK = {"32.6.1": "4.6", "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4",
                  "32.7.5": "4.6.5", "32.7.6": "4.6.6", "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2",
                  "35.5.0": "5.1.3", "35.6.0": "5.1.4", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2"}


class RunnerError(Exception):
    """A controlled failure: main() prints ``error: <message>`` (one line) and exits with ``code``."""

    def __init__(self, message, code=EXIT_BAD_INPUT):
        Exception.__init__(self, message)
        self.code = code


def log(message):
    sys.stderr.write("[runner] " + message + "\n")
    sys.stderr.flush()


def first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def import_runtime(name):
    """The runtime's Python module, or a RunnerError that says how to install it."""
    try:
        if name == "openvino":
            import openvino
            return openvino
        return __import__(name)
    except ImportError as exc:
        raise RunnerError("runtime '{}' is not installed ({}): {}".format(name, first_line(exc), INSTALL_HINTS[name]))


def importable(name):
    try:
        import_runtime(name)
        return True
    except RunnerError:
        return False


def pick_runtime(model, requested):
    """auto: .engine/.plan -> tensorrt, .xml -> openvino, .onnx -> tensorrt, onnxruntime, openvino (first importable)."""
    suffix = os.path.splitext(model)[1].lower()
    allowed = {".engine": ("tensorrt",), ".plan": ("tensorrt",), ".xml": ("openvino",),
               ".onnx": ("tensorrt", "onnxruntime", "openvino")}
    if suffix not in allowed:
        raise RunnerError("model '{}' has suffix '{}': pass a .onnx, .engine/.plan (TensorRT) or .xml (OpenVINO IR) file"
                          .format(model, suffix))
    if requested != "auto":
        if requested not in allowed[suffix]:
            raise RunnerError("runtime '{}' cannot run a '{}' file (use: {})".format(requested, suffix, ", ".join(allowed[suffix])))
        return requested
    for name in allowed[suffix]:
        if importable(name):
            return name
    raise RunnerError("no runtime for '{}' is installed: {}".format(
        model, "; or ".join(INSTALL_HINTS[n] for n in allowed[suffix])))


# ----------------------------------------------------------------------------- metrics (numpy only)

def softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def binary_auc(scores, positive):
    """ROC AUC as the Mann-Whitney U statistic, ties counted half (average ranks). NaN with one class."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive).astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.repeat(first + (counts - 1) / 2.0 + 1.0, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_metrics(logits, labels, threshold=0.5):
    """Binary: accuracy of P(class 1) >= threshold, AUC of P(class 1). Multi-class: argmax accuracy, macro one-vs-rest AUC."""
    probs = softmax(np.asarray(logits, dtype=np.float64))
    labels = np.asarray(labels).reshape(-1)
    if probs.shape[1] == 2:
        pred = (probs[:, 1] >= threshold).astype(np.int64)
        auc = binary_auc(probs[:, 1], labels == 1)
    else:
        pred = probs.argmax(axis=1)
        aucs = [binary_auc(probs[:, c], labels == c) for c in range(probs.shape[1])]
        aucs = [a for a in aucs if not math.isnan(a)]
        auc = float(np.mean(aucs)) if aucs else float("nan")
        threshold = None
    return {"accuracy": float((pred == labels).mean()), "auc": auc, "threshold": threshold}


def region_labels(mask):
    """(labels, areas) of the 8-connected regions of one H x W boolean mask: each pixel of a region holds the
    flat index of the region's first pixel (background: H*W), areas[i] the size of the region labelled i.
    numpy only (scipy is not on every device): the smallest label spreads to the 3 x 3 neighbours while
    pointer jumping (label <- label of the label) shortcuts long regions, until nothing changes."""
    h, w = mask.shape
    none = h * w
    lab = np.where(mask, np.arange(none).reshape(h, w), none)
    fg = mask.ravel()
    while True:
        padded = np.pad(lab, 1, mode="constant", constant_values=none)
        low = lab.copy()
        for dy in range(3):
            for dx in range(3):
                low = np.minimum(low, padded[dy:dy + h, dx:dx + w])
        flat = np.where(fg, low.ravel(), none)
        while True:
            jumped = flat.copy()
            jumped[fg] = flat[flat[fg]]
            if np.array_equal(jumped, flat):
                break
            flat = jumped
        new = flat.reshape(h, w)
        if np.array_equal(new, lab):
            return lab, np.bincount(lab.ravel(), minlength=none + 1)
        lab = new


def remove_small_regions(pred, min_region):
    """N x H x W label maps with every 8-connected region of class c smaller than min_region[c] pixels set to
    background (0), as edgekd.metrics.segmentation.remove_small_regions does on the host."""
    out = np.array(pred, copy=True)
    for c, least in enumerate(min_region or []):
        if c == 0 or least <= 1:
            continue
        for m in out:
            mask = m == c
            if mask.any():
                lab, areas = region_labels(mask)
                small = areas < least
                small[-1] = False  # the background label
                m[small[lab]] = 0
    return out


def segmentation_metrics(logits, masks, min_region=None):
    """Per-pixel argmax masks (then min_region's small regions cleared) and mean Dice per foreground class over
    images (an image with the class in neither mask is skipped; a false positive on an empty mask scores 0),
    as edgekd's host report computes it."""
    pred = np.asarray(logits).argmax(axis=1)
    if min_region:
        pred = remove_small_regions(pred, min_region)
    masks = np.asarray(masks)
    k = int(np.asarray(logits).shape[1])
    per_class = []
    for c in range(1, k):
        p, t = pred == c, masks == c
        inter = (p & t).reshape(len(p), -1).sum(axis=1).astype(np.float64)
        total = p.reshape(len(p), -1).sum(axis=1) + t.reshape(len(t), -1).sum(axis=1)
        scores = [2.0 * i / d for i, d in zip(inter, total) if d > 0]
        per_class.append(float(np.mean(scores)) if scores else float("nan"))
    defined = [d for d in per_class if not math.isnan(d)]
    return pred.astype(np.uint8), {"mean_dice": float(np.mean(defined)) if defined else float("nan"),
                                   "dice_per_class": [float("nan")] + per_class,
                                   "pixel_accuracy": float((pred == masks).mean())}


def bundle_labels(model_path, flag):
    """(labels.json as a dict, its path) next to the model; ({}, None) when there is none."""
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), LABELS)
    if not os.path.isfile(path):
        return {}, None
    try:
        with open(path) as f:
            labels = json.load(f)
    except (IOError, OSError, ValueError) as exc:
        raise RunnerError("{} is not readable JSON ({}): restore the bundle's copy or pass {}"
                          .format(path, first_line(exc), flag))
    return (labels if isinstance(labels, dict) else {}), path


def pick_min_region(requested, model_path, classes):
    """Segmentation: the smallest region kept per class and where it came from: --min-region (every foreground
    class), else the bundle's labels.json (kept by the host on val), else none (every region kept)."""
    if requested is not None:
        if requested < 0:
            raise RunnerError("--min-region must be >= 0 pixels (0 keeps every region), got {}".format(requested))
        return {"value": [0] + [int(requested)] * (classes - 1), "source": "--min-region", "path": None}
    labels, path = bundle_labels(model_path, "--min-region")
    value = labels.get("min_region")
    if value is None:
        return {"value": None, "source": "none (every region kept)", "path": None}
    if (not isinstance(value, list) or len(value) != classes
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value)):
        raise RunnerError("{} records min_region {!r}, not {} pixel counts >= 0: restore the bundle's copy or pass "
                          "--min-region".format(path, value, classes))
    return {"value": value, "source": "labels.json (kept on val)", "path": path}


def bundle_threshold(model_path):
    """(threshold, labels.json path) recorded by the bundle next to the model; (None, None) when it records none."""
    labels, path = bundle_labels(model_path, "--threshold")
    value = labels.get("threshold")
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise RunnerError("{} records threshold {!r}, not a probability in [0, 1]: pass --threshold".format(path, value))
    return float(value), path


def pick_threshold(requested, recorded, classes):
    """The binary decision threshold and where it came from: --threshold, else the bundle's labels.json
    (``recorded``: the operating point chosen on val, from bundle_threshold), else 0.5. Multi-class: argmax."""
    if classes != 2:
        return {"value": None, "source": "argmax (multi-class)", "path": None}
    if requested is not None:
        return {"value": requested, "source": "--threshold", "path": None}
    value, path = recorded
    if value is not None:
        return {"value": value, "source": "labels.json (operating point chosen on val)", "path": path}
    return {"value": 0.5, "source": "default 0.5 (no threshold in labels.json)", "path": None}


def latency_summary(seconds, batch):
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return {"p50": p50, "p90": p90, "p99": p99, "mean": float(ms.mean())}, batch * 1000.0 / p50


# ----------------------------------------------------------------------------- inputs

def load_sample(path):
    """images float32 N x C x H x W, labels int64 N (segmentation: masks N x H x W), class names from sample.npz."""
    if not os.path.isfile(path):
        raise RunnerError("sample file '{}' not found: pass --sample with the bundle's sample.npz".format(path))
    try:
        with np.load(path, allow_pickle=False) as archive:
            target = "masks" if "masks" in archive.files else "labels"
            missing = [k for k in ("images", target) if k not in archive.files]
            if missing:
                raise RunnerError("sample '{}' lacks {} (it has: {}); expected images N x C x H x W float32, labels N int64"
                                  .format(path, ", ".join(missing), ", ".join(archive.files)))
            images, labels = archive["images"], archive[target]
            names = [str(n) for n in archive["class_names"]] if "class_names" in archive.files else []
    except RunnerError:
        raise
    except Exception as exc:
        raise RunnerError("sample '{}' is not a readable .npz ({}): copy it again from the bundle".format(path, first_line(exc)))
    labels = np.asarray(labels).astype(np.int64)
    if target == "masks":
        if images.ndim != 4 or labels.shape != (images.shape[0],) + images.shape[2:]:
            raise RunnerError("sample '{}': images have shape {} and masks {}; expected N x C x H x W images and "
                              "N x H x W masks".format(path, "x".join(str(d) for d in images.shape),
                                                       "x".join(str(d) for d in labels.shape)))
        return np.ascontiguousarray(images, dtype=np.float32), labels, names
    labels = labels.reshape(-1)
    if images.ndim != 4 or len(images) == 0 or len(images) != len(labels):
        raise RunnerError("sample '{}': images have shape {} and labels {} values; expected N x C x H x W images and N labels"
                          .format(path, "x".join(str(d) for d in images.shape), len(labels)))
    return np.ascontiguousarray(images, dtype=np.float32), labels, names


def check_input_shape(expected, sample_chw, where):
    """Raise a one-line RunnerError when a static C x H x W of the model differs from the sample's."""
    if len(expected) != 1 + len(sample_chw):
        raise RunnerError("sample shape mismatch: {} takes a rank-{} input, the sample holds N x C x H x W images"
                          .format(where, len(expected)))
    for want, got in zip(expected[1:], sample_chw):
        if want is not None and want > 0 and want != got:
            raise RunnerError("sample shape mismatch: sample images are {} but {} expects {} (C x H x W); "
                              "use the sample.npz of the same bundle".format(
                                  "x".join(str(d) for d in sample_chw), where,
                                  "x".join("?" if d is None or d < 0 else str(d) for d in expected[1:])))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_mentions(path, needle):
    with open(path, "rb") as f:
        return needle in f.read()


# ----------------------------------------------------------------------------- ONNX Runtime / OpenVINO

class OnnxRuntimeModel(object):
    """An ONNX file in ONNX Runtime on the CPU (intra_op_num_threads = --threads, sequential)."""

    def __init__(self, path, batch, chw, threads):
        ort = import_runtime("onnxruntime")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise RunnerError("ONNX Runtime cannot load '{}': {}".format(path, first_line(exc)))
        inp = self.session.get_inputs()[0]
        self.input_name, self.output_name = inp.name, self.session.get_outputs()[0].name
        self.dtype = np.float16 if "float16" in inp.type else np.float32
        shape = [d if isinstance(d, int) and d > 0 else None for d in inp.shape]
        check_input_shape(shape, chw, "the model")
        if shape[0] not in (None, batch):
            raise RunnerError("the model has a fixed batch of {}: pass --batch {}".format(shape[0], shape[0]))
        qdq = file_mentions(path, b"QuantizeLinear")
        self.info = {"name": "onnxruntime", "version": ort.__version__,
                     "precision": "int8" if qdq else ("fp16" if self.dtype == np.float16 else "fp32"),
                     "model_format": "onnx" + (" (Q/DQ)" if qdq else ""), "providers": self.session.get_providers(),
                     "intra_op_num_threads": threads or "default", "inter_op_num_threads": 1}

    def __call__(self, x):
        return self.session.run([self.output_name], {self.input_name: x.astype(self.dtype, copy=False)})[0]

    def close(self):
        self.session = None


class OpenVINOModel(object):
    """An OpenVINO IR (or ONNX) compiled for the CPU, reshaped to a static batch, with an explicit
    INFERENCE_PRECISION_HINT=f32 (the CPU plugin otherwise picks bf16 on CPUs that have it)."""

    def __init__(self, path, batch, chw, threads):
        ov = import_runtime("openvino")
        core_cls = getattr(ov, "Core", None)
        if core_cls is None:  # OpenVINO 2022.x/2023.0 keep the API in openvino.runtime
            from openvino.runtime import Core as core_cls
        core = core_cls()
        try:
            model = core.read_model(path)
        except Exception as exc:
            raise RunnerError("OpenVINO cannot read '{}': {}".format(path, first_line(exc)))
        if len(model.inputs) != 1:
            raise RunnerError("'{}' has {} inputs; the runner feeds one image batch".format(path, len(model.inputs)))
        pshape = model.inputs[0].get_partial_shape()
        shape = [d.get_length() if d.is_static else None for d in pshape]
        check_input_shape(shape, chw, "the model")
        try:
            model.reshape([batch] + list(chw))
        except Exception as exc:
            raise RunnerError("OpenVINO cannot reshape '{}' to batch {}: {}".format(path, batch, first_line(exc)))
        quantized = any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise RunnerError("OpenVINO cannot compile '{}' for CPU: {}".format(path, first_line(exc)))
        self.request = self.compiled.create_infer_request()
        read_back = {}
        for key in ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS", "PERFORMANCE_HINT"):
            try:
                value = self.compiled.get_property(key)
            except Exception:
                continue
            if hasattr(value, "get_type_name"):  # an element type: f32, bf16, f16
                value = value.get_type_name()
            read_back[key] = value if isinstance(value, (int, float, str)) else str(getattr(value, "name", value))
        if read_back.get("INFERENCE_PRECISION_HINT", "f32") != "f32":
            log("warning: OpenVINO runs with INFERENCE_PRECISION_HINT={} (f32 was asked)".format(
                read_back["INFERENCE_PRECISION_HINT"]))
        version = getattr(ov, "__version__", None) or ov.get_version()
        self.info = {"name": "openvino", "version": version, "device": "CPU",
                     "precision": "int8" if quantized else "fp32",
                     "model_format": ("ir" if path.lower().endswith(".xml") else "onnx") + (" (FakeQuantize)" if quantized else ""),
                     "inference_precision_hint": read_back.get("INFERENCE_PRECISION_HINT"), "compiled_config": read_back}

    def __call__(self, x):
        self.request.infer({0: x})
        return np.array(self.request.get_output_tensor(0).data)

    def close(self):
        self.request = self.compiled = None


# ----------------------------------------------------------------------------- TensorRT (not executed in edgekd's tests)

class CudaRuntime(object):
    """The few libcudart calls the TensorRT path needs, through ctypes (JetPack has no pycuda by default).
    EDGEKD_CUDART=/path/to/libcudart.so picks the library when several CUDA versions are installed."""

    H2D, D2H = 1, 2  # cudaMemcpyKind

    def __init__(self):
        self.lib = self._load()
        vp, sz, ci = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
        signatures = {"cudaMalloc": [ctypes.POINTER(vp), sz], "cudaFree": [vp], "cudaMemcpy": [vp, vp, sz, ci],
                      "cudaMemcpyAsync": [vp, vp, sz, ci, vp], "cudaStreamCreate": [ctypes.POINTER(vp)],
                      "cudaStreamSynchronize": [vp], "cudaStreamDestroy": [vp],
                      "cudaRuntimeGetVersion": [ctypes.POINTER(ci)]}
        for name, args in signatures.items():
            fn = getattr(self.lib, name)
            fn.argtypes, fn.restype = args, ci
        self.lib.cudaGetErrorString.argtypes, self.lib.cudaGetErrorString.restype = [ci], ctypes.c_char_p
        version = ctypes.c_int(0)
        self.check(self.lib.cudaRuntimeGetVersion(ctypes.byref(version)), "cudaRuntimeGetVersion")
        self.version = "{}.{}".format(version.value // 1000, (version.value % 1000) // 10)
        self.check(self.lib.cudaFree(None), "cudaFree(0) (CUDA context creation)")

    @staticmethod
    def _load():
        forced = os.environ.get("EDGEKD_CUDART")
        if forced:
            try:
                return ctypes.CDLL(forced)
            except OSError as exc:
                raise RunnerError("EDGEKD_CUDART={} cannot be loaded: {}".format(forced, first_line(exc)))
        names = [ctypes.util.find_library("cudart"), "libcudart.so",
                 "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so.10.2",
                 "/usr/local/cuda/lib64/libcudart.so"]
        for entry in sys.path:  # pip wheels of TensorRT 10 bring nvidia-cuda-runtime-cu12
            names += sorted(glob.glob(os.path.join(entry, "nvidia", "cuda_runtime", "lib", "libcudart.so*")))
        for name in names:
            if not name:
                continue
            try:
                return ctypes.CDLL(name)
            except OSError:
                continue
        raise RunnerError("libcudart (the CUDA runtime) was not found: install CUDA (JetPack includes it) "
                          "or add /usr/local/cuda/lib64 to LD_LIBRARY_PATH")

    def check(self, status, what):
        if status != 0:
            message = self.lib.cudaGetErrorString(status)
            raise RunnerError("CUDA call {} failed: {} (error {})".format(
                what, message.decode() if message else "unknown", status), code=1)

    def malloc(self, nbytes):
        ptr = ctypes.c_void_p()
        self.check(self.lib.cudaMalloc(ctypes.byref(ptr), max(int(nbytes), 1)), "cudaMalloc")
        return ptr.value

    def free(self, ptr):
        if ptr:
            self.lib.cudaFree(ctypes.c_void_p(ptr))

    def copy(self, dst, src, nbytes, kind, stream=None):
        if stream is None:
            self.check(self.lib.cudaMemcpy(dst, src, nbytes, kind), "cudaMemcpy")
        else:
            self.check(self.lib.cudaMemcpyAsync(dst, src, nbytes, kind, stream), "cudaMemcpyAsync")

    def stream(self):
        handle = ctypes.c_void_p()
        self.check(self.lib.cudaStreamCreate(ctypes.byref(handle)), "cudaStreamCreate")
        return handle.value

    def sync(self, stream):
        self.check(self.lib.cudaStreamSynchronize(stream), "cudaStreamSynchronize")


def trt_version(trt):
    parts = [int(p) for p in re.findall(r"\d+", trt.__version__)[:2]]
    return tuple(parts + [0] * (2 - len(parts)))


# ---------------------------------------------------------------------------------------------
# TensorRT per release: the one table of build flags. The host (edgekd.lower.tensorrt, for
# build_engine.sh and its own builds) imports these functions from this file, and the copy of
# this file in a bundle uses them on the device, so both always agree.
#   8.x / 10.x: BuilderFlag.FP16 / INT8 (trtexec --fp16 / --int8); INT8 from Q/DQ still needs INT8,
#               and FP16 lets the layers outside Q/DQ pairs run in half precision.
#   11.x:       those flags are gone: networks are strongly typed, precision comes from the ONNX
#               types and Q/DQ nodes; trtexec documents --stronglyTyped as the (default) mode.
STRONGLY_TYPED_FROM = (11, 0)
_PRECISION_FLAGS = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}


def builder_flags(version, precision):
    """TensorRT BuilderFlag names to set for ``precision`` on TensorRT ``version`` (major, minor)."""
    if tuple(version) >= STRONGLY_TYPED_FROM:
        return []
    return list(_PRECISION_FLAGS[precision])


def trtexec_precision_args(version, precision):
    """trtexec's precision arguments for ``precision`` on TensorRT ``version``."""
    if tuple(version) >= STRONGLY_TYPED_FROM:
        return ["--stronglyTyped"]
    return ["--" + flag.lower() for flag in builder_flags(version, precision)]


def trtexec_workspace_arg(version, mb):
    """trtexec's workspace argument: --workspace before 8.4, --memPoolSize after (10.x wants a unit)."""
    version = tuple(version)
    if version < (8, 4):
        return "--workspace={}".format(mb)
    if version < (10, 0):
        return "--memPoolSize=workspace:{}".format(mb)  # MiB; 8.4-9.x parse a bare number only
    return "--memPoolSize=workspace:{}M".format(mb)


def network_flags(trt, version):
    """NetworkDefinitionCreationFlag bits for an ONNX network on TensorRT ``version``."""
    flags = trt.NetworkDefinitionCreationFlag
    version = tuple(version)
    if version < (10, 0):
        return 1 << int(flags.EXPLICIT_BATCH)  # ONNX networks need explicit batch on 8.x
    if version < STRONGLY_TYPED_FROM:
        return 0  # 10.x: always explicit batch; EXPLICIT_BATCH is deprecated and ignored
    return 1 << int(flags.STRONGLY_TYPED)  # 11: the only mode (flag kept, marked deprecated)


def parse_onnx(trt, logger, builder, onnx_path):
    """(network, parser) for the ONNX file; explicit batch (a flag in TensorRT 8.x, the default in 10.x)."""
    network = builder.create_network(network_flags(trt, trt_version(trt)))
    parser = trt.OnnxParser(network, logger)
    if hasattr(parser, "parse_from_file"):
        ok = parser.parse_from_file(onnx_path)
    else:
        with open(onnx_path, "rb") as f:
            ok = parser.parse(f.read())
    if not ok:
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RunnerError("TensorRT cannot parse '{}': {}".format(onnx_path, errors or "unknown error"))
    return network, parser


def build_engine(onnx_path, engine_path, batch, precision, workspace_mb):
    """Build ``engine_path`` from ``onnx_path``: build_engine.sh next to it if present, else trtexec,
    else the TensorRT Python API. Returns how it was built (recorded in the JSON)."""
    start = time.perf_counter()
    script = os.path.join(os.path.dirname(os.path.abspath(onnx_path)), "build_engine.sh")
    if os.path.isfile(script):
        log("building the engine with {} ...".format(script))
        status = subprocess.call(["bash", script], cwd=os.path.dirname(script), stdout=sys.stderr)
        if status != 0:
            raise RunnerError("build_engine.sh exited with status {}: see its output above".format(status), code=1)
        how, precision_used = "build_engine.sh", engine_precision(script)
    else:
        trt = import_runtime("tensorrt")
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network, _parser = parse_onnx(trt, logger, builder, onnx_path)
        layer_types = {network.get_layer(i).type for i in range(network.num_layers)}
        qdq = bool(layer_types & {trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE})
        fast_fp16 = getattr(builder, "platform_has_fast_fp16", True)  # deprecated in TensorRT 10
        if precision == "auto":
            precision = "int8" if qdq else ("fp16" if fast_fp16 else "fp32")
        version = trt_version(trt)
        inp = network.get_input(0)
        shape = [batch] + [int(d) for d in inp.shape][1:]
        trtexec = shutil.which("trtexec") or next(
            (p for p in ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec") if os.path.isfile(p)), None)
        if trtexec:
            how = "trtexec"
            cmd = [trtexec, "--onnx=" + onnx_path, "--saveEngine=" + engine_path,
                   trtexec_workspace_arg(version, workspace_mb)]
            if any(d < 0 for d in inp.shape):
                cmd.append("--shapes={}:{}".format(inp.name, "x".join(str(d) for d in shape)))
            cmd += trtexec_precision_args(version, precision)
            log("building the engine: " + " ".join(cmd))
            if subprocess.call(cmd, stdout=sys.stderr) != 0:
                raise RunnerError("trtexec failed to build '{}': see its output above".format(engine_path), code=1)
        else:
            how = "tensorrt-python-api"
            log("building the engine with the TensorRT {} Python API ...".format(trt.__version__))
            _build_with_api(trt, builder, network, inp, shape, engine_path, builder_flags(version, precision),
                            workspace_mb)
        flags = builder_flags(version, precision)
        precision_used = ("+".join(sorted(f.lower() for f in flags)) or "fp32") if version < STRONGLY_TYPED_FROM \
            else "strongly typed (the ONNX's types and Q/DQ)"
    if not os.path.isfile(engine_path):
        raise RunnerError("the engine build finished but '{}' does not exist: build_engine.sh must write it".format(engine_path))
    return {"built_by": how, "precision": precision_used, "seconds": round(time.perf_counter() - start, 1)}


def _build_with_api(trt, builder, network, inp, shape, engine_path, flags, workspace_mb):
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):  # TensorRT >= 8.4
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    else:
        config.max_workspace_size = workspace_mb << 20
    if any(d < 0 for d in inp.shape):
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, shape, shape, shape)
        config.add_optimization_profile(profile)
    for flag in flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RunnerError("TensorRT could not build an engine from the ONNX file (see the TensorRT log above)", code=1)
    tmp = engine_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(bytes(serialized))
    os.replace(tmp, engine_path)


def engine_precision(path):
    """The precision flags of the trtexec command in build_engine.sh next to ``path``, if any."""
    script = os.path.join(os.path.dirname(os.path.abspath(path)), "build_engine.sh")
    if not os.path.isfile(script):
        return "unknown (prebuilt engine)"
    with open(script) as f:
        text = f.read()
    flags = [p for p in ("int8", "fp16", "best") if re.search(r"--{}\b".format(p), text)]
    return "+".join(flags) if flags else "fp32"


class TensorRTModel(object):
    """A serialized TensorRT engine run with device buffers from libcudart.

    TensorRT >= 8.5 (and 10.x, where the binding API is gone): named I/O tensors,
    ``set_input_shape``/``set_tensor_address`` and ``execute_async_v3`` on a CUDA stream.
    TensorRT 8.0-8.4 (JetPack 4.6 has 8.2): binding indices, ``set_binding_shape`` and the
    synchronous ``execute_v2(bindings)``. One timed call = host-to-device copy, inference and
    device-to-host copy of the first output (the logits), synchronised. NOT executed in
    edgekd's tests (no NVIDIA GPU where it was written).
    """

    def __init__(self, path, batch, chw, threads):
        trt = import_runtime("tensorrt")
        self.cuda = CudaRuntime()
        logger = trt.Logger(trt.Logger.WARNING)
        with open(path, "rb") as f:
            self.engine = trt.Runtime(logger).deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise RunnerError("TensorRT {} cannot load '{}': engines only run with the TensorRT version and GPU that "
                              "built them; rebuild it on this device (./build_engine.sh)".format(trt.__version__, path))
        self.context = self.engine.create_execution_context()
        self.named = hasattr(self.engine, "num_io_tensors") and hasattr(self.context, "execute_async_v3")
        self.tensors = self._io(trt, batch, chw)
        self.pointers = []
        for t in self.tensors:
            t["host"] = np.empty(t["shape"], dtype=t["dtype"])
            t["device"] = self.cuda.malloc(t["host"].nbytes)
            self.pointers.append(t["device"])
            if self.named:
                self.context.set_tensor_address(t["name"], t["device"])
        self.stream = self.cuda.stream() if self.named else None
        self.input = next(t for t in self.tensors if t["is_input"])
        self.output = next(t for t in self.tensors if not t["is_input"])
        self.info = {"name": "tensorrt", "version": trt.__version__, "cuda_runtime": self.cuda.version,
                     "precision": engine_precision(path), "model_format": "engine",
                     "execution_api": "execute_async_v3" if self.named else "execute_v2",
                     "io_dtypes": {t["name"]: np.dtype(t["dtype"]).name for t in self.tensors}}

    def _io(self, trt, batch, chw):
        """Name, direction, resolved shape and numpy dtype of every I/O tensor, in binding order."""
        engine, context, tensors = self.engine, self.context, []
        count = engine.num_io_tensors if self.named else engine.num_bindings
        for i in range(count):
            if self.named:
                name = engine.get_tensor_name(i)
                is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                shape, dtype = list(engine.get_tensor_shape(name)), engine.get_tensor_dtype(name)
            else:
                name = engine.get_binding_name(i)
                index = engine.get_binding_index(name)
                is_input = engine.binding_is_input(index)
                shape, dtype = list(engine.get_binding_shape(index)), engine.get_binding_dtype(index)
            if is_input:
                check_input_shape(shape, chw, "the engine")
                if any(d < 0 for d in shape):
                    wanted = [batch] + list(chw)
                    ok = context.set_input_shape(name, wanted) if self.named else context.set_binding_shape(i, wanted)
                    if ok is False:
                        raise RunnerError("the engine does not accept input shape {}: rebuild it for --batch {}".format(
                            "x".join(str(d) for d in wanted), batch))
                elif shape[0] != batch:
                    raise RunnerError("the engine was built for batch {}: pass --batch {}".format(shape[0], shape[0]))
            tensors.append({"name": name, "is_input": is_input, "dtype": trt.nptype(dtype)})
        for i, t in enumerate(tensors):  # output shapes are known once the input shapes are set
            shape = context.get_tensor_shape(t["name"]) if self.named else context.get_binding_shape(i)
            t["shape"] = tuple(int(d) for d in shape)
        return tensors

    def __call__(self, x):
        host = np.ascontiguousarray(x, dtype=self.input["dtype"])
        out = self.output["host"]
        if self.named:
            self.cuda.copy(self.input["device"], host.ctypes.data, host.nbytes, CudaRuntime.H2D, self.stream)
            if not self.context.execute_async_v3(self.stream or 0):
                raise RunnerError("TensorRT execute_async_v3 failed", code=1)
            self.cuda.copy(out.ctypes.data, self.output["device"], out.nbytes, CudaRuntime.D2H, self.stream)
            self.cuda.sync(self.stream)
        else:
            self.cuda.copy(self.input["device"], host.ctypes.data, host.nbytes, CudaRuntime.H2D)
            if not self.context.execute_v2(self.pointers):
                raise RunnerError("TensorRT execute_v2 failed", code=1)
            self.cuda.copy(out.ctypes.data, self.output["device"], out.nbytes, CudaRuntime.D2H)
        return out.astype(np.float32)

    def close(self):
        for ptr in self.pointers:
            self.cuda.free(ptr)
        self.pointers, self.context, self.engine = [], None, None


def engine_for(onnx_path, batch, precision, workspace_mb, rebuild):
    """The engine to run for an ONNX model: the one build_engine.sh names (--saveEngine) or
    <stem>.engine next to it, reused when newer than the ONNX file, else built now."""
    folder = os.path.dirname(os.path.abspath(onnx_path))
    engine = os.path.splitext(os.path.abspath(onnx_path))[0] + ".engine"
    script = os.path.join(folder, "build_engine.sh")
    if os.path.isfile(script):
        with open(script) as f:
            named = re.search(r"--saveEngine[= ]\"?([^\s\"]+)", f.read())
        if named and "$" not in named.group(1):
            engine = os.path.normpath(os.path.join(folder, named.group(1)))
    if not rebuild and os.path.isfile(engine) and os.path.getmtime(engine) >= os.path.getmtime(onnx_path):
        return engine, None
    return engine, build_engine(os.path.abspath(onnx_path), engine, batch, precision, workspace_mb)


# ----------------------------------------------------------------------------- device description

def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").replace("\x00", "").strip()
    except (IOError, OSError):
        return None


def cpu_name():
    text = read_text("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Model", "cpu model"):
        match = re.search(r"^{}\s*:\s*(.+)$".format(key), text, re.MULTILINE)
        if match:
            return match.group(1).strip()
    return platform.processor() or platform.machine()


def l4t_release(text=None):
    """(L4T version like '32.7.1', JetPack version or None) from /etc/nv_tegra_release."""
    text = read_text("/etc/nv_tegra_release") if text is None else text
    if not text:
        return None, None
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not match:
        return text.splitlines()[0], None
    revision = match.group(2) if match.group(2).count(".") else match.group(2) + ".0"
    l4t = "{}.{}".format(match.group(1), revision)
    return l4t, L4T_TO_JETPACK.get(l4t)


def power_mode():
    """The nvpmodel power mode on a Jetson (latency depends on it), or None elsewhere."""
    tool = shutil.which("nvpmodel")
    if not tool:
        return None
    try:
        out = subprocess.check_output([tool, "-q"], stderr=subprocess.STDOUT, timeout=10, universal_newlines=True)
    except (subprocess.SubprocessError, OSError):
        return None
    match = re.search(r"NV Power Mode:\s*(.+)", out)
    return match.group(1).strip() if match else out.strip().splitlines()[0] if out.strip() else None


def device_info():
    l4t, jetpack = l4t_release()
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "machine": platform.machine(),
            "cpu": cpu_name(), "logical_cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "jetson_model": read_text("/proc/device-tree/model"), "l4t": l4t,
            "jetpack": jetpack, "power_mode": power_mode()}


# ----------------------------------------------------------------------------- measurement

def pad_to(batch_images, batch):
    """Fill a short last batch by repeating its last image (static-batch models need full batches)."""
    if len(batch_images) == batch:
        return batch_images
    extra = np.repeat(batch_images[-1:], batch - len(batch_images), axis=0)
    return np.concatenate([batch_images, extra], axis=0)


def time_calls(model, x, warmup, iterations):
    """Seconds of each of ``iterations`` calls after ``warmup`` untimed ones, with the GC paused."""
    for _ in range(warmup):
        model(x)
    seconds, step = [], max(iterations // 10, 1)
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        for i in range(iterations):
            start = time.perf_counter()
            model(x)
            seconds.append(time.perf_counter() - start)
            if (i + 1) % step == 0:
                log("timed {}/{}".format(i + 1, iterations))
    finally:
        if gc_was_on:
            gc.enable()
    return seconds


def predict(model, images, batch):
    """float32 N x K logits (segmentation: N x K x H x W) of every image, ``batch`` at a time."""
    outputs = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        out = np.asarray(model(pad_to(chunk, batch)), dtype=np.float32)
        if out.ndim not in (2, 4) or out.shape[0] != batch:
            raise RunnerError("the model returned shape {} for a batch of {}; expected batch x classes logits "
                              "(x H x W for segmentation)"
                              .format("x".join(str(d) for d in out.shape), batch), code=1)
        outputs.append(out[:len(chunk)])
    return np.concatenate(outputs, axis=0)


def open_model(runtime, path, batch, chw, threads):
    cls = {"onnxruntime": OnnxRuntimeModel, "openvino": OpenVINOModel, "tensorrt": TensorRTModel}[runtime]
    return cls(path, batch, chw, threads)


def json_safe(value):
    """NaN/inf become null (strict JSON), numpy scalars plain numbers."""
    if isinstance(value, dict):
        return dict((k, json_safe(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def prepare(args):
    """Check the arguments, pick the runtime, load the sample and (TensorRT) find or build the engine.
    Returns (runtime, model path, sample path, images, labels, class names, engine build or None)."""
    model_path = args.model
    if args.batch < 1 or args.iterations < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        raise RunnerError("--batch and --iterations must be >= 1, --warmup >= 0 and --threads >= 1")
    engine_target = args.build_engine and model_path.lower().endswith((".engine", ".plan"))
    source = os.path.splitext(model_path)[0] + ".onnx" if engine_target else model_path
    if not os.path.isfile(source):
        raise RunnerError("model file '{}' not found: pass --model with the bundle's model.onnx, model.engine or model.xml"
                          .format(source))
    runtime = pick_runtime(model_path, args.runtime)
    sample_path = args.sample or os.path.join(os.path.dirname(os.path.abspath(model_path)), "sample.npz")
    if args.sample is None and not os.path.isfile(sample_path):
        raise RunnerError("no sample.npz next to '{}': pass --sample with the bundle's sample.npz".format(model_path))
    images, labels, class_names = load_sample(sample_path)
    build = None
    if engine_target:
        build = build_engine(os.path.abspath(source), os.path.abspath(model_path), args.batch, args.precision,
                             args.workspace_mb)
    elif runtime == "tensorrt" and model_path.lower().endswith(".onnx"):
        model_path, build = engine_for(model_path, args.batch, args.precision, args.workspace_mb, args.build_engine)
    elif args.build_engine:
        raise RunnerError("--build-engine needs the tensorrt runtime and --model model.onnx or model.engine")
    return runtime, model_path, sample_path, images, labels, class_names, build


def measure(model, images, args):
    """(latency summary, throughput, logits of the whole sample); runtime failures become one-line errors."""
    try:
        x = pad_to(images[:args.batch], args.batch)
        log("warm-up {} calls, then {} timed calls of batch {}".format(args.warmup, args.iterations, args.batch))
        latency, throughput = latency_summary(time_calls(model, x, args.warmup, args.iterations), args.batch)
        log("p50 {:.3f} ms; predicting {} sample images".format(latency["p50"], len(images)))
        return latency, throughput, predict(model, images, args.batch)
    except RunnerError:
        raise
    except Exception as exc:
        raise RunnerError("{} failed while running the model: {}".format(model.info["name"], first_line(exc)), code=1)
    finally:
        model.close()


def run(args):
    """Everything the CLI does, as a dict (the JSON document)."""
    runtime, model_path, sample_path, images, labels, class_names, build = prepare(args)
    recorded = bundle_threshold(args.model) if args.threshold is None else (None, None)  # a bad file fails before timing
    chw = tuple(int(d) for d in images.shape[1:])
    log("runtime {}, model {}, sample {} images of {}".format(runtime, model_path, len(images), "x".join(map(str, chw))))
    model = open_model(runtime, model_path, args.batch, chw, args.threads)
    latency, throughput, logits = measure(model, images, args)
    if logits.ndim == 4:  # segmentation: masks and Dice, no threshold
        return segmentation_result(args, runtime, model, model_path, sample_path, images, labels, class_names, build,
                                   latency, throughput, logits)
    if logits.shape[1] < 2 or labels.max() >= logits.shape[1] or labels.min() < 0:
        raise RunnerError("sample labels range {}..{} but the model has {} output(s); the runner expects one logit per "
                          "class: use the sample.npz of the same bundle".format(labels.min(), labels.max(), logits.shape[1]))
    threshold = pick_threshold(args.threshold, recorded, logits.shape[1])
    log("threshold: {} ({})".format(threshold["value"], threshold["source"]))
    runtime_info, model_info = run_details(model, model_path, args, build)
    return json_safe({
        "runner_version": RUNNER_VERSION, "measured_on": "device",
        "measured_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": device_info(), "runtime": runtime_info, "model": model_info, "batch": args.batch,
        "latency_ms": latency, "throughput_ips": throughput, "iterations": args.iterations, "warmup": args.warmup,
        "sample": {"path": os.path.abspath(sample_path), "n": int(len(images)), "class_names": class_names},
        "threshold": threshold,
        "metrics": classification_metrics(logits, labels, threshold["value"]),
    })


def run_details(model, model_path, args, build):
    """(runtime, model) entries of the JSON document: what ran the model, and the sha256 of what it ran."""
    runtime_info = dict(model.info)
    if args.threads:
        runtime_info["threads"] = args.threads
    if build:
        runtime_info["engine_build"] = build
        runtime_info["precision"] = build["precision"]
    model_info = {"path": os.path.abspath(model_path), "sha256": sha256_file(model_path)}
    if model_path.lower().endswith(".xml") and os.path.isfile(model_path[:-4] + ".bin"):
        model_info["weights_sha256"] = sha256_file(model_path[:-4] + ".bin")
    return runtime_info, model_info


def segmentation_result(args, runtime, model, model_path, sample_path, images, masks, class_names, build, latency,
                        throughput, logits):
    """The JSON document of a segmentation model: latency, mean Dice on the sample, and the predicted masks
    written to --masks-out (default: masks.npz beside --out)."""
    if masks.ndim != 3:
        raise RunnerError("the model outputs per-pixel logits but the sample holds labels, not masks: use the "
                          "sample.npz of the same bundle")
    if masks.max() >= logits.shape[1] or masks.min() < 0:
        raise RunnerError("sample masks range {}..{} but the model has {} class(es)".format(
            masks.min(), masks.max(), logits.shape[1]))
    min_region = pick_min_region(args.min_region, args.model, logits.shape[1])
    log("smallest region kept: {} ({})".format(min_region["value"], min_region["source"]))
    pred, metrics = segmentation_metrics(logits, masks, min_region["value"])
    log("mean Dice {:.4f} on {} sample images".format(metrics["mean_dice"], len(images)))
    out_masks = args.masks_out or (os.path.join(os.path.dirname(os.path.abspath(args.out)), "masks.npz")
                                   if args.out else None)
    if out_masks:
        np.savez_compressed(out_masks, masks=pred)
        log("wrote predicted masks to " + out_masks)
    runtime_info, model_info = run_details(model, model_path, args, build)
    return json_safe({
        "runner_version": RUNNER_VERSION, "measured_on": "device", "task": "segmentation",
        "measured_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": device_info(), "runtime": runtime_info, "model": model_info, "batch": args.batch,
        "latency_ms": latency, "throughput_ips": throughput, "iterations": args.iterations, "warmup": args.warmup,
        "sample": {"path": os.path.abspath(sample_path), "n": int(len(images)), "class_names": class_names},
        "masks": os.path.abspath(out_masks) if out_masks else None, "min_region": min_region,
        "metrics": metrics,
    })


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Benchmark one model on this device: latency, accuracy and ROC AUC on "
                                            "the bundle's sample; prints one JSON document on stdout.")
    p.add_argument("--model", required=True, help="model.onnx, model.engine/.plan (TensorRT) or model.xml (OpenVINO IR)")
    p.add_argument("--runtime", default="auto", choices=RUNTIMES,
                   help="auto: .engine -> tensorrt, .xml -> openvino, .onnx -> tensorrt, else onnxruntime, else openvino")
    p.add_argument("--sample", default=None, help="sample.npz (images N x C x H x W float32, labels N); default: next to the model")
    p.add_argument("--warmup", type=int, default=50, help="untimed calls before timing (default 50)")
    p.add_argument("--iterations", type=int, default=500, help="timed calls (default 500)")
    p.add_argument("--batch", type=int, default=1, help="images per call (default 1)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (ONNX Runtime, OpenVINO); default: the runtime's")
    p.add_argument("--threshold", type=float, default=None,
                   help="binary tasks: P(class 1) threshold for accuracy (default: the bundle's labels.json, chosen on val; "
                        "else 0.5)")
    p.add_argument("--min-region", type=int, default=None,
                   help="segmentation: predicted regions smaller than this many pixels become background (default: the "
                        "bundle's labels.json min_region, kept on val; else none; 0 keeps every region)")
    p.add_argument("--build-engine", action="store_true",
                   help="TensorRT: (re)build the engine from the .onnx model (build_engine.sh, else trtexec, else the Python API)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "int8"),
                   help="TensorRT engine build without build_engine.sh: auto = fp16 where fast, int8 when the ONNX has Q/DQ")
    p.add_argument("--workspace-mb", type=int, default=512, help="TensorRT builder workspace in MiB (default 512)")
    p.add_argument("--out", default=None, help="also write the JSON document to this file")
    p.add_argument("--masks-out", default=None,
                   help="segmentation: write the predicted masks (N x H x W uint8) here (default: masks.npz beside --out)")
    return p.parse_args(argv)


def main(argv=None):
    """CLI entry point. Native libraries (TensorRT, trtexec) may print on file descriptor 1, so it
    is pointed at stderr while the runner works and the JSON goes to the original stdout."""
    args = parse_args(argv)
    sys.stdout.flush()
    saved_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        result = run(args)
    except RunnerError as exc:
        sys.stderr.write("error: {}\n".format(first_line(exc)))
        return exc.code
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    finally:
        sys.stdout.flush()  # whatever was printed while working goes to stderr ...
        os.dup2(saved_stdout, 1)  # ... and file descriptor 1 is stdout again
        os.close(saved_stdout)
    text = json.dumps(result, indent=2)
    if args.out:
        try:
            folder = os.path.dirname(os.path.abspath(args.out))
            if not os.path.isdir(folder):
                os.makedirs(folder)
            with open(args.out, "w") as f:
                f.write(text + "\n")
        except (IOError, OSError) as exc:
            sys.stderr.write("error: cannot write --out {}: {}\n".format(args.out, first_line(exc)))
            return EXIT_BAD_INPUT
        log("wrote " + args.out)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
