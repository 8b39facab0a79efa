"""TensorRT lowering: Q/DQ rules TensorRT accepts, the uint8 → int8 rewrite, engine plans per Jetson
target, the build script, and build_engine's use of the TensorRT API (through a recording stand-in:
TensorRT cannot be installed on this machine)."""
from __future__ import annotations

import copy
import dataclasses
import stat
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd._compat import import_timm
from edgekd.errors import InputError, LoweringError, MissingDependencyError, TargetError
from edgekd.lower.tensorrt import (
    EnginePlan,
    build_engine,
    check_tensorrt_onnx,
    check_tensorrt_qdq,
    default_precision,
    export_opset,
    inspect_tensorrt_onnx,
    plan_engine,
    tensorrt_onnx_problems,
    tensorrt_qdq_problems,
    to_tensorrt_qdq,
    write_build_script,
)
from edgekd.targets import list_targets, load_target

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # legacy ONNX exporter, nncf/torchao
              pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]

SHAPE = (1, 1, 32, 32)


# --- a real NNCF INT8 model exported to Q/DQ ONNX --------------------------------------------------

def _squares(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images with a 6×6 square: bright for class 1, dark for class 0."""
    y = torch.arange(n) % 2
    x = 0.3 * torch.randn(n, 1, 32, 32, generator=g)
    pos = torch.randint(0, 26, (n, 2), generator=g)
    for i, (r, c) in enumerate(pos.tolist()):
        x[i, :, r:r + 6, c:c + 6] += 1.2 if y[i] == 1 else -1.2
    return x, y


@pytest.fixture(scope="module", params=["resnet10t", "mobilenetv3_small_050"])
def qdq_onnx(request, tmp_path_factory) -> tuple[Path, np.ndarray, str]:
    """A briefly trained timm model, quantized by NNCF, stripped and exported to Q/DQ ONNX.

    resnet10t: ReLU everywhere, so NNCF makes those activations uint8. mobilenetv3_small_050 (the
    default student): also depthwise convolutions, whose inputs NNCF quantizes per channel.
    """
    import nncf

    from edgekd.lower.onnx import export_onnx
    from edgekd.quantize import strip_for_export

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        x, y = _squares(192, g)
        torch.manual_seed(0)
        model = import_timm().create_model(request.param, pretrained=False, in_chans=1, num_classes=2)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(2):
            for i in range(0, len(x), 32):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x[i:i + 32]), y[i:i + 32]).backward()
                opt.step()
        model.eval()
        calib = x[:8]
        fast = nncf.AdvancedQuantizationParameters(disable_bias_correction=True)
        q = nncf.quantize(copy.deepcopy(model), nncf.Dataset(list(calib.split(1))), subset_size=8,
                          preset=nncf.QuantizationPreset.PERFORMANCE, advanced_parameters=fast)
        path = tmp_path_factory.mktemp("qdq") / "nncf.onnx"
        export_onnx(strip_for_export(q.eval(), calib[:1]), calib[:1], path)
        test_x, _ = _squares(256, torch.Generator().manual_seed(1))
    finally:
        torch.set_num_threads(threads)
    return path, test_x.numpy(), request.param


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_raw_nncf_export_is_rejected_because_of_uint8(qdq_onnx):
    path, _, name = qdq_onnx
    found = inspect_tensorrt_onnx(path, require_qdq=True)
    assert found.quantize > 5 and found.uint8 > 0 and found.per_channel_weights > 0
    problems = tensorrt_qdq_problems(path)
    uint8 = [p for p in problems if "is uint8 (unsigned, asymmetric range [0, 255])" in p]
    per_channel = [p for p in problems if "per-channel scale on an activation" in p]
    assert uint8 and len(uint8) + len(per_channel) == len(problems)  # nothing else is wrong
    assert bool(per_channel) == name.startswith("mobilenet")  # depthwise-conv inputs
    with pytest.raises(LoweringError, match=r"uint8 \(unsigned, asymmetric.*to_tensorrt_qdq"):
        check_tensorrt_qdq(path)


def test_rewrite_makes_int8_symmetric_qdq_that_agrees_in_onnxruntime(qdq_onnx, tmp_path):
    import onnx

    from edgekd.lower._trt_qdq import constants
    from edgekd.lower.validate import check_agreement

    src, x, _ = qdq_onnx
    dst = to_tensorrt_qdq(src, tmp_path / "trt.onnx")
    assert dst == tmp_path / "trt.onnx" and tensorrt_qdq_problems(dst) == []
    check_tensorrt_qdq(dst)
    check_tensorrt_onnx(dst, "10.3")
    assert [p.name for p in tmp_path.iterdir()] == ["trt.onnx"]  # no temp file left
    before, after = onnx.load(str(src)).graph, onnx.load(str(dst)).graph
    def layers(graph):  # the constant plumbing (Constant, Identity of constants) may change, nothing else
        return [n.op_type for n in graph.node if n.op_type not in ("Constant", "Identity")]

    assert layers(before) == layers(after)
    c0, c1 = constants(before), constants(after)
    by_name = {n.name: n for n in before.node}
    weight_q = {n.output[0] for n in before.node if n.op_type == "QuantizeLinear" and n.input[0] in c0}
    rewritten = 0
    for node in after.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        old = by_name[node.name]
        assert c1[node.input[2]].dtype == np.int8 and not c1[node.input[2]].any()
        old_scale, old_zp = c0[old.input[1]], c0[old.input[2]]
        weight = old.input[0] in c0 or old.input[0] in weight_q
        if not weight and (old_zp.dtype == np.uint8 or old_scale.size > 1):  # activations
            factor = 255 / 127 if old_zp.dtype == np.uint8 else 1.0  # same range, int8, one scale
            assert c1[node.input[1]] == pytest.approx(old_scale.max() * factor, rel=1e-6)
            rewritten += 1
        else:  # weights (int8, per channel): untouched
            assert list(node.input) == list(old.input)
    assert rewritten >= inspect_tensorrt_onnx(src).uint8 > 0
    result = check_agreement("int8 tensorrt-ready vs nncf export", _ort(src, x), _ort(dst, x), precision="int8")
    assert result.ok and result.agreement >= 0.97


def test_per_channel_activation_scales_become_one_per_tensor_scale(tmp_path):
    """NNCF quantizes depthwise-conv inputs per channel; TensorRT quantizes activations per tensor."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    scale = np.array([0.01, 0.04], np.float32)
    inits = [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(np.zeros(2, np.int8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"], name="q", axis=1),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq", axis=1),
             helper.make_node("Relu", ["dq"], ["logits"], name="relu")]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2, 4, 4]) for n in ("input", "logits")]
    model = helper.make_model(helper.make_graph(nodes, "g", io[:1], io[1:], inits),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    assert all("per-channel scale on an activation" in p for p in tensorrt_qdq_problems(model))
    dst = to_tensorrt_qdq(_save(model, tmp_path / "pc.onnx"), tmp_path / "pt.onnx")
    graph = onnx.load(str(dst)).graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    assert inits[graph.node[0].input[1]] == pytest.approx(0.04) and inits[graph.node[0].input[1]].shape == ()
    assert not any(a.name == "axis" for n in graph.node for a in n.attribute)
    assert tensorrt_qdq_problems(dst) == []
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(1, 2, 4, 4)
    ref, out = (ort.InferenceSession(str(p)).run(None, {"input": x})[0] for p in (tmp_path / "pc.onnx", dst))
    assert np.abs(out - ref).max() <= 0.04 / 2 + 1e-6  # one rounding step of the shared scale


def test_rewrite_refuses_what_it_cannot_fix_and_writes_nothing(tmp_path):
    src = _save(_qdq_model(act_zp=np.uint8(3)), tmp_path / "asym.onnx")
    with pytest.raises(LoweringError, match=r"zero point 3 \(asymmetric.*PERFORMANCE"):
        to_tensorrt_qdq(src, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists() and len(list(tmp_path.iterdir())) == 1


# --- Q/DQ rules on crafted models ------------------------------------------------------------------

def _qdq_model(*, opset: int = 17, act_zp=np.int8(0), weight_zp=None, weight_axis: int = 0,
               extra_op: str | None = None):
    """input → Q/DQ (activation) → Conv(DQ(int8 weights per channel)) → Relu [→ extra_op] → output."""
    from onnx import TensorProto, helper, numpy_helper

    w_q = np.random.default_rng(0).integers(-127, 128, (4, 1, 3, 3)).astype(np.int8)
    wzp = np.zeros(4, np.int8) if weight_zp is None else np.asarray(weight_zp, np.int8)
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "a_scale"),
        numpy_helper.from_array(np.asarray(act_zp), "a_zp"),
        numpy_helper.from_array(w_q, "w_q"),
        numpy_helper.from_array(np.full(4, 0.01, np.float32), "w_scale"),
        numpy_helper.from_array(wzp, "w_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "a_scale", "a_zp"], ["xq"], name="q_in"),
        helper.make_node("DequantizeLinear", ["xq", "a_scale", "a_zp"], ["xdq"], name="dq_in"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="dq_w", axis=weight_axis),
        helper.make_node("Conv", ["xdq", "w"], ["conv"], name="conv"),
        helper.make_node("Relu", ["conv"], ["relu" if extra_op else "logits"], name="relu"),
    ]
    if extra_op:
        nodes.append(helper.make_node(extra_op, ["relu"], ["logits"], name="extra"))
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None if extra_op else [1, 4, 6, 6])]
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _save(model, path: Path) -> Path:
    import onnx

    onnx.save(model, str(path))
    return path


def test_crafted_symmetric_int8_model_passes():
    assert tensorrt_qdq_problems(_qdq_model()) == []


def test_rewrite_of_a_crafted_uint8_pair_keeps_the_range_and_drops_the_old_constants(tmp_path):
    import onnx
    import onnxruntime as ort

    src = _save(_qdq_model(act_zp=np.uint8(0)), tmp_path / "u8.onnx")
    dst = to_tensorrt_qdq(src, tmp_path / "i8.onnx")
    graph = onnx.load(str(dst)).graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    assert "a_scale" not in inits and "a_zp" not in inits  # detached constants removed, weights kept
    assert {"w_q", "w_scale", "w_zp"} <= set(inits)
    q, dq = graph.node[0], graph.node[1]
    assert q.input[1:] == dq.input[1:] and inits[q.input[2]].dtype == np.int8
    assert inits[q.input[1]] == pytest.approx(0.02 * 255 / 127)
    x = np.abs(np.random.default_rng(0).normal(size=(1, 1, 8, 8))).astype(np.float32)  # >= 0, like ReLU outputs
    ref, out = (ort.InferenceSession(str(p)).run(None, {"input": x})[0] for p in (src, dst))
    assert 0 < np.abs(out - ref).max() < 0.05 * np.abs(ref).max()  # about one bit coarser, same range


def test_asymmetric_zero_point_is_rejected_with_a_clear_message(tmp_path):
    problems = tensorrt_qdq_problems(_qdq_model(weight_zp=[0, 5, 0, 0]))
    assert problems == ["DequantizeLinear 'dq_w' has zero point 5 (asymmetric quantization): "
                        "TensorRT needs zero point 0"]
    path = _save(_qdq_model(act_zp=np.int8(5)), tmp_path / "asym.onnx")
    with pytest.raises(LoweringError, match=r"zero point 5 \(asymmetric quantization\).*fix: re-quantize"):
        check_tensorrt_qdq(path)


def test_opset_11_is_rejected():
    problems = tensorrt_qdq_problems(_qdq_model(opset=11))
    assert any(p.startswith("opset 11: TensorRT explicit quantization needs opset >= 13") for p in problems)


def test_unsupported_and_custom_operators_are_rejected(tmp_path):
    assert tensorrt_qdq_problems(_qdq_model(extra_op="Det")) == [
        "Det 'extra' is not among the ONNX operators edgekd knows TensorRT's parser supports"]
    model = _qdq_model(extra_op="Relu")
    model.graph.node[-1].domain = "org.openvinotoolkit"
    assert "custom operator (org.openvinotoolkit)" in tensorrt_qdq_problems(model)[0]


def test_weight_axis_and_scales_and_missing_zero_points_are_checked():
    assert "axis 1" in tensorrt_qdq_problems(_qdq_model(weight_axis=1))[0]
    model = _qdq_model()
    model.graph.initializer[3].CopyFrom(__import__("onnx").numpy_helper.from_array(
        np.array([0.01, 0.0, np.nan, 0.01], np.float32), "w_scale"))
    assert "positive and finite" in tensorrt_qdq_problems(model)[0]
    no_zp = _qdq_model()
    for node in no_zp.graph.node[:2]:
        del node.input[2]
    assert all("no zero point, which ONNX reads as uint8" in p for p in tensorrt_qdq_problems(no_zp))


def test_fp32_model_is_no_qdq_model_and_missing_file_is_an_input_error(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])])
    fp32 = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert "not an INT8 Q/DQ model" in tensorrt_qdq_problems(fp32)[0]
    assert tensorrt_onnx_problems(fp32, "10.3") == []
    with pytest.raises(InputError, match="does not exist"):
        check_tensorrt_qdq(tmp_path / "nope.onnx")


def test_tensorrt_8_2_needs_opset_13_where_hardswish_is_written_as_hardsigmoid(tmp_path):
    from edgekd.lower.onnx import export_onnx

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Hardswish(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    x = torch.randn(SHAPE)
    at17 = export_onnx(model, x, tmp_path / "m17.onnx", opset=17)
    problems = tensorrt_onnx_problems(at17, "8.2")
    assert any("opset 17: TensorRT 8.2 parses operators up to opset 13" in p for p in problems)
    assert any("HardSwish" in p and "needs TensorRT >= 8.4" in p for p in problems)
    assert tensorrt_onnx_problems(at17, "8.5") == [] and tensorrt_onnx_problems(at17, "10.3") == []
    assert (export_opset("8.2"), export_opset("8.5"), export_opset("10.3")) == (13, 17, 17)
    at13 = export_onnx(model, x, tmp_path / "m13.onnx", opset=export_opset("8.2"))
    check_tensorrt_onnx(at13, "8.2")
    with pytest.raises(LoweringError, match="re-export with opset 13"):
        check_tensorrt_onnx(at17, "8.2")


# --- engine plans for every Jetson target ----------------------------------------------------------

DLA = ["--useDLACore=0", "--allowGPUFallback"]
EXPECTED = {  # target: (default precision, precision flags, workspace flag, DLA flags)
    "jetson-nano": ("fp16", ["--fp16"], "--workspace=512", []),
    "jetson-xavier-nx": ("int8", ["--int8", "--fp16"], "--memPoolSize=workspace:1024", DLA),
    "jetson-orin-nano": ("int8", ["--int8", "--fp16"], "--memPoolSize=workspace:1024M", []),
    "jetson-agx-orin": ("int8", ["--int8", "--fp16"], "--memPoolSize=workspace:2048M", DLA),
}


def test_every_jetson_profile_has_an_expected_plan():
    assert sorted(n for n in list_targets() if n.startswith("jetson-")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_plan_for_each_jetson_target(name):
    profile = load_target(name)
    precision, flags, workspace, dla = EXPECTED[name]
    assert default_precision(profile) == precision
    plan = plan_engine(profile, "model.onnx", precision, (1, 1, 64, 64))
    assert (plan.onnx, plan.engine, plan.input_name, plan.tensorrt) == ("model.onnx", "model.engine", "input",
                                                                       profile.tensorrt)
    assert plan.needs_qdq_onnx == (precision == "int8")  # Nano builds from the fp32 ONNX
    assert plan.dla_core == (0 if dla else None) and plan.static
    assert plan.trtexec_args() == ["trtexec", "--onnx=model.onnx", "--saveEngine=model.engine",
                                   "--shapes=input:1x1x64x64", *flags, workspace, *dla]
    fp16 = plan_engine(profile, "model.onnx", "fp16", (1, 1, 64, 64))
    assert fp16.trtexec_args()[4:] == ["--fp16", workspace, *dla] and not fp16.needs_qdq_onnx


def test_nano_int8_and_other_bad_requests_are_rejected():
    nano = load_target("jetson-nano")
    with pytest.raises(InputError, match=r"Jetson Nano \(Maxwell\) has no INT8: use fp16"):
        plan_engine(nano, "model.onnx", "int8", SHAPE)
    with pytest.raises(InputError, match="does not run bf16|not 'bf16'"):
        plan_engine(load_target("jetson-orin-nano"), "model.onnx", "bf16", SHAPE)
    with pytest.raises(InputError, match="does not run fp32"):
        plan_engine(load_target("jetson-orin-nano"), "model.onnx", "fp32", SHAPE)
    with pytest.raises(TargetError, match="not TensorRT"):
        plan_engine(load_target("generic-cpu"), "model.onnx", "fp32", SHAPE)
    for name in ("../model.onnx", "model.engine", "dir/model.onnx"):
        with pytest.raises(InputError, match="plain .onnx file name"):
            plan_engine(nano, name, "fp16", SHAPE)
    with pytest.raises(InputError, match="four positive integers"):
        plan_engine(nano, "model.onnx", "fp16", (1, 32, 32))
    with pytest.raises(InputError, match="takes 224×224 inputs"):
        plan_engine(dataclasses.replace(nano, input_size=224), "model.onnx", "fp16", SHAPE)


def test_dynamic_batch_uses_min_opt_max_shapes_and_dla_refuses_it():
    orin = dataclasses.replace(load_target("jetson-orin-nano"), batch=8)
    plan = plan_engine(orin, "model.onnx", "int8", (4, 1, 32, 32))
    assert plan.max_batch == 8 and not plan.static
    assert plan.trtexec_args()[3:6] == ["--minShapes=input:1x1x32x32", "--optShapes=input:4x1x32x32",
                                        "--maxShapes=input:8x1x32x32"]
    with pytest.raises(InputError, match="DLA needs fixed shapes"):
        plan_engine(dataclasses.replace(load_target("jetson-agx-orin"), batch=8), "model.onnx", "int8", SHAPE)


@pytest.mark.parametrize("version,workspace,precision_flags", [
    ("8.2", "--workspace=1024", ["--int8", "--fp16"]),
    ("8.4", "--memPoolSize=workspace:1024", ["--int8", "--fp16"]),
    ("10.3", "--memPoolSize=workspace:1024M", ["--int8", "--fp16"]),
    ("11.0", "--memPoolSize=workspace:1024M", ["--stronglyTyped"]),
])
def test_trtexec_flags_follow_the_tensorrt_version(version, workspace, precision_flags):
    profile = dataclasses.replace(load_target("jetson-xavier-nx"), tensorrt=version)
    args = plan_engine(profile, "model.onnx", "int8", SHAPE).trtexec_args()
    assert args[4:] == [*precision_flags, workspace, *DLA]


def test_no_gpu_fallback_means_no_allow_flag():
    profile = dataclasses.replace(load_target("jetson-agx-orin"), gpu_fallback=False)
    assert plan_engine(profile, "model.onnx", "fp16", SHAPE).trtexec_args()[-1] == "--useDLACore=0"


# --- build_engine.sh --------------------------------------------------------------------------------

def test_build_script_content_and_executable_bit(tmp_path):
    plan = plan_engine(load_target("jetson-xavier-nx"), "model.onnx", "int8", (1, 1, 64, 64))
    path = write_build_script(plan, tmp_path)
    text = path.read_text()
    assert path.name == "build_engine.sh" and path.stat().st_mode & stat.S_IXUSR
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    for fact in ("jetson-xavier-nx", "JetPack 5.1", "TensorRT 8.5", "INT8", "DLA core 0",
                 "engines are not portable between TensorRT versions or devices: build on the device"):
        assert fact.lower() in header.lower()
    assert '/usr/src/tensorrt/bin/trtexec' in text and 'cd "$(dirname "$0")"' in text
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def _fake_trtexec(bin_dir: Path, log: Path) -> None:
    bin_dir.mkdir()
    exe = bin_dir / "trtexec"
    exe.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$PWD" "$@" > {log}\n')
    exe.chmod(0o755)


def test_build_script_runs_the_exact_command_with_quoted_names(tmp_path):
    bundle = tmp_path / "my bundle"
    bundle.mkdir()
    plan = plan_engine(load_target("jetson-orin-nano"), "student int8.onnx", "int8", SHAPE)
    script = write_build_script(plan, bundle)
    log = tmp_path / "argv.txt"
    _fake_trtexec(tmp_path / "bin", log)
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run([str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert log.read_text().splitlines() == [str(bundle), *plan.trtexec_args()[1:]]
    assert "--onnx=student int8.onnx" in log.read_text().splitlines()


def test_build_script_without_trtexec_says_how_to_install(tmp_path):
    plan = plan_engine(load_target("jetson-nano"), "model.onnx", "fp16", SHAPE)
    script = write_build_script(plan, tmp_path)
    run = subprocess.run([str(script)], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert run.returncode == 127 and "trtexec not found" in run.stderr and "apt-get install" in run.stderr
    assert not (tmp_path / "model.engine").exists()


# --- build_engine with and without TensorRT ---------------------------------------------------------

def test_build_engine_without_tensorrt_is_a_missing_dependency(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    plan = plan_engine(load_target("jetson-nano"), "model.onnx", "fp16", SHAPE)
    with pytest.raises(MissingDependencyError, match=r"TensorRT is not installed .* build_engine.sh, or pip install "
                                                     r"'edgekd\[tensorrt\]' there"):
        build_engine(tmp_path / "model.onnx", tmp_path / "model.engine", plan)


def fake_tensorrt(version: str, *, dla_cores: int = 0, fast_int8: bool = True, parse_ok: bool = True,
                  build_ok: bool = True, input_name: str = "input") -> types.ModuleType:
    """A stand-in for the ``tensorrt`` module with the API surface of release ``version``, recording calls.

    Only what each release really has exists (8.2: max_workspace_size, no MemoryPoolType; 10.x:
    set_memory_pool_limit, no max_workspace_size; 11: no FP16/INT8 flags, no EXPLICIT_BATCH), so
    using a missing one raises AttributeError as it would on the device.
    """
    major, minor = (int(p) for p in version.split(".")[:2])
    calls: list[tuple] = []
    trt = types.ModuleType("tensorrt")
    trt.__version__, trt.calls = version, calls
    flags = {} if major >= 11 else {"EXPLICIT_BATCH": 0}
    if major >= 10:
        flags["STRONGLY_TYPED"] = 1
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(**flags)
    trt.BuilderFlag = types.SimpleNamespace(GPU_FALLBACK="GPU_FALLBACK",
                                            **({} if major >= 11 else {"FP16": "FP16", "INT8": "INT8"}))
    trt.DeviceType = types.SimpleNamespace(GPU="GPU", DLA="DLA")
    if (major, minor) >= (8, 4):
        trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")

    class Logger:
        WARNING = "WARNING"

        def __init__(self, severity):
            calls.append(("Logger", severity))

    class Config:
        _settable = {"default_device_type", "DLA_core"} | ({"max_workspace_size"} if major < 10 else set())

        def __setattr__(self, name, value):
            if name not in self._settable:
                raise AttributeError(f"'IBuilderConfig' object has no attribute '{name}'")
            calls.append((f"config.{name}", value))

        def set_flag(self, flag):
            calls.append(("set_flag", flag))

        def add_optimization_profile(self, profile):
            calls.append(("add_optimization_profile", profile.shapes))

    if (major, minor) >= (8, 4):
        Config.set_memory_pool_limit = lambda self, pool, size: calls.append(("set_memory_pool_limit", pool, size))

    class Profile:
        shapes = None

        def set_shape(self, name, low, opt, high):
            self.shapes = (name, tuple(low), tuple(opt), tuple(high))

    class Builder:
        num_DLA_cores = dla_cores
        platform_has_fast_int8 = fast_int8

        def __init__(self, logger):
            calls.append(("Builder",))

        def create_network(self, flags):
            calls.append(("create_network", flags))
            tensor = types.SimpleNamespace(name=input_name, shape=(-1, 1, 32, 32))
            return types.SimpleNamespace(num_inputs=1, get_input=lambda i: tensor)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network",))
            return f"engine for TensorRT {version}".encode() if build_ok else None

    class OnnxParser:
        num_errors = 0 if parse_ok else 2

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls.append(("parse_from_file", path))
            return parse_ok

        def get_error(self, i):
            return types.SimpleNamespace(desc=lambda: f"unsupported thing {i}", node=lambda: 7)

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    return trt


@pytest.fixture
def onnx_file(tmp_path) -> Path:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 1, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 1, 32, 32])])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "model.onnx")


def _build(monkeypatch, trt, onnx_path: Path, plan: EnginePlan) -> list[tuple]:
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    engine = build_engine(onnx_path, onnx_path.with_name("model.engine"), plan)
    assert engine.read_bytes() == f"engine for TensorRT {trt.__version__}".encode()
    return [c for c in trt.calls if c[0] not in ("Logger", "Builder")]


def _static(name="input"):
    return ("add_optimization_profile", (name, SHAPE, SHAPE, SHAPE))


def test_build_engine_tensorrt_8_2_nano_fp16(monkeypatch, onnx_file):
    plan = plan_engine(load_target("jetson-nano"), "model.onnx", "fp16", SHAPE)
    assert _build(monkeypatch, fake_tensorrt("8.2.1"), onnx_file, plan) == [
        ("create_network", 1 << 0),  # EXPLICIT_BATCH
        ("parse_from_file", str(onnx_file)),
        ("config.max_workspace_size", 512 << 20),
        ("set_flag", "FP16"),
        _static(),
        ("build_serialized_network",),
    ]


def test_build_engine_tensorrt_10_3_agx_orin_int8_on_dla(monkeypatch, onnx_file):
    plan = plan_engine(load_target("jetson-agx-orin"), "model.onnx", "int8", SHAPE)
    assert _build(monkeypatch, fake_tensorrt("10.3.0", dla_cores=2), onnx_file, plan) == [
        ("create_network", 0),  # always explicit batch on 10.x
        ("parse_from_file", str(onnx_file)),
        ("set_memory_pool_limit", "WORKSPACE", 2048 << 20),
        ("set_flag", "INT8"), ("set_flag", "FP16"),
        ("config.default_device_type", "DLA"), ("config.DLA_core", 0), ("set_flag", "GPU_FALLBACK"),
        _static(),
        ("build_serialized_network",),
    ]


def test_build_engine_tensorrt_10_3_orin_nano_dynamic_batch_no_dla(monkeypatch, onnx_file):
    plan = plan_engine(dataclasses.replace(load_target("jetson-orin-nano"), batch=4), "model.onnx", "int8", SHAPE)
    calls = _build(monkeypatch, fake_tensorrt("10.3.0"), onnx_file, plan)
    assert ("add_optimization_profile", ("input", SHAPE, SHAPE, (4, 1, 32, 32))) in calls
    assert not any(c[0].startswith("config.") for c in calls)


def test_build_engine_tensorrt_11_is_strongly_typed(monkeypatch, onnx_file):
    profile = dataclasses.replace(load_target("jetson-orin-nano"), tensorrt="11.0")
    plan = plan_engine(profile, "model.onnx", "int8", SHAPE)
    assert _build(monkeypatch, fake_tensorrt("11.0.0"), onnx_file, plan) == [
        ("create_network", 1 << 1),  # STRONGLY_TYPED; no FP16/INT8 flags exist
        ("parse_from_file", str(onnx_file)),
        ("set_memory_pool_limit", "WORKSPACE", 1024 << 20),
        _static(),
        ("build_serialized_network",),
    ]
    with pytest.raises(LoweringError, match="strongly typed.*FP32 engine: convert it to fp16"):
        build_engine(onnx_file, onnx_file.with_name("x.engine"), plan_engine(profile, "model.onnx", "fp16", SHAPE))


def test_build_engine_failures_are_lowering_errors_and_leave_no_file(monkeypatch, onnx_file):
    nano = plan_engine(load_target("jetson-nano"), "model.onnx", "fp16", SHAPE)
    agx = plan_engine(load_target("jetson-agx-orin"), "model.onnx", "int8", SHAPE)
    cases = [
        (fake_tensorrt("8.2.1", parse_ok=False), nano, r"cannot parse .*node 7: unsupported thing 0; node 7: unsu"),
        (fake_tensorrt("8.2.1", build_ok=False), nano, "failed to build fp16 engine"),
        (fake_tensorrt("10.3.0", dla_cores=0), agx, "DLA core 0 but this device has 0 DLA core"),
        (fake_tensorrt("10.3.0", dla_cores=2, fast_int8=False), agx, "no fast INT8"),
        (fake_tensorrt("8.2.1", input_name="x"), nano, "the ONNX input is 'x' but the plan says 'input'"),
    ]
    for trt, plan, message in cases:
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        with pytest.raises(LoweringError, match=message):
            build_engine(onnx_file, onnx_file.with_name("model.engine"), plan)
    assert sorted(p.name for p in onnx_file.parent.iterdir()) == ["model.onnx"]


def test_build_engine_warns_when_the_installed_version_is_not_the_planned_one(monkeypatch, onnx_file):
    plan = plan_engine(load_target("jetson-xavier-nx"), "model.onnx", "fp16", SHAPE)  # planned for 8.5
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("8.2.1", dla_cores=2))
    with pytest.warns(UserWarning, match="plan is for TensorRT 8.5 but TensorRT 8.2.1 is installed"):
        build_engine(onnx_file, onnx_file.with_name("model.engine"), plan)
    with pytest.raises(InputError, match="does not exist"):
        build_engine(onnx_file.with_name("missing.onnx"), onnx_file.with_name("m.engine"), plan)
