"""The estimator's arithmetic: FLOPs, liveness arena, nearest measured kernel, roofline, limits, decisions."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.errors import ResourceLimitError
from edgec.targets import load_profile
from edgec.targets.calibrate import choose_threads
from edgec.targets.decide import choose_format, choose_precision
from edgec.targets.estimate import check_limits, estimate_model, latency
from edgec.targets.microbench import KernelSpec, float_model
from edgec.targets.model_stats import analyse
from edgec.targets.overlay import build_overlay, write_overlay
from tests.support.measured import _kernel, measured_doc

pytestmark = pytest.mark.unit


def conv_net() -> onnx.ModelProto:
    """x[1,3,8,8] -> Conv 3x3 (4 out, pad 1) -> Relu -> Reshape -> Conv 1x1 (8 out) -> y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((8, 4, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array([1, 4, 8, 8], dtype=np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Reshape", ["b", "shape"], ["c"]),
             helper.make_node("Conv", ["c", "w2"], ["y"], kernel_shape=[1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_flops_classes_fusion_weights_and_arena():
    stats = analyse(conv_net())
    kinds = [(n.op_type, n.kind) for n in stats.nodes]
    assert kinds == [("Conv", "conv3x3"), ("Relu", "free"), ("Reshape", "view"), ("Conv", "conv1x1")]
    assert stats.nodes[0].flops == 2 * 4 * 64 * 3 * 9
    assert stats.nodes[3].flops == 2 * 8 * 64 * 4
    assert stats.nodes[1].note == "fused into Conv"
    assert stats.weights_bytes == (4 * 3 * 9 + 8 * 4) * 4 + 4 * 8
    # Peak: the first conv's input (3x64 floats) beside its output (4x64); then that buffer (shared by the
    # Relu and the Reshape) beside y (8x64).
    assert stats.arena_bytes == max(3 * 64 + 4 * 64, 4 * 64 + 8 * 64) * 4


def test_quantized_conv_is_int8_and_its_qdq_is_free(tmp_path):
    from edgec.targets.microbench import _quantized

    spec = KernelSpec("conv3x3", (1, 8, 8, 8), "int8", repeat=2)
    onnx.save(float_model(spec), tmp_path / "f.onnx")
    _quantized(spec, tmp_path / "f.onnx", tmp_path / "q.onnx", np.ones((1, 8, 8, 8), np.float32))
    stats = analyse(onnx.load(tmp_path / "q.onnx"))
    convs = [n for n in stats.nodes if n.op_type == "Conv"]
    assert len(convs) == 2 and all(n.precision == "int8" for n in convs)
    qdq = [n for n in stats.nodes if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    # onnxruntime fuses DQ -> Conv -> Q into QLinearConv; only the graph input's Q and output's DQ run alone.
    assert [n.op_type for n in qdq if n.kind == "eltwise"] == ["QuantizeLinear", "DequantizeLinear"]
    assert len([n for n in qdq if n.kind == "free"]) == len(qdq) - 2


@pytest.fixture
def calibrated(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEC_HOME", str(tmp_path / "home"))

    def make(kernels, name="board", base="rpi4", **system):
        doc = measured_doc(kernels)
        doc["system"].update(system)
        write_overlay(build_overlay(name, base, doc), tmp_path / "home" / "targets")
        return load_profile(name)

    return make


def test_an_op_at_a_measured_shape_costs_what_was_measured(calibrated):
    profile = calibrated([_kernel("conv3x3", shape=(1, 16, 32, 32), ms=0.08),
                          _kernel("conv3x3", shape=(1, 8, 8, 8), ms=0.005)])
    stats = analyse(float_model(KernelSpec("conv3x3", (1, 16, 32, 32), repeat=3)))
    result = latency(stats, profile)
    assert [round(r["ms"], 9) for r in result["ops"]] == [0.08] * 3
    assert result["ms"] == pytest.approx(0.004 + 3 * 0.08)
    assert "measured conv3x3 fp32 1x16x32x32" in result["ops"][0]["basis"]
    # Twice the channels on both sides: 4x the FLOPs above the fixed cost (0.8 x the smallest kernel).
    bigger = latency(analyse(float_model(KernelSpec("conv3x3", (1, 32, 32, 32), repeat=1))), profile)
    assert bigger["ops"][0]["ms"] == pytest.approx(0.004 + (0.08 - 0.004) * 4)


def test_unmeasured_class_falls_back_to_the_roofline(calibrated):
    profile = calibrated([_kernel("gemm", shape=(1, 64), ms=0.001)], bandwidth_gbps=10.0)
    stats = analyse(float_model(KernelSpec("pool", (1, 16, 32, 32), repeat=1)))
    row = latency(stats, profile)["ops"][0]
    flops, nbytes = 9.0 * 16 * 1024, 4.0 * 2 * 16 * 1024
    expected = max(flops / (profile.cpu.peak_gflops_fp32 * 1e6), nbytes / (10.0 * 1e6)) + 0.0003
    assert row["ms"] == pytest.approx(expected)
    assert row["basis"].startswith("roofline")


def test_uncalibrated_profile_is_roofline_only_and_says_so():
    report = estimate_model(conv_net(), load_profile("rpi4"))
    assert report["op_counts"]["measured"] == 0 and "no [performance.measured]" in report["latency_basis"]
    assert report["memory"]["basis"].startswith("weights + activation arena")
    assert report["energy"]["joules"] == pytest.approx(6.4 * report["latency_ms"] / 1000)


def test_a_model_larger_than_the_ram_is_refused_with_the_numbers(calibrated):
    profile = calibrated([_kernel()], memory_base_bytes=0)
    big = float_model(KernelSpec("gemm", (1, 1024), repeat=2))  # 8 MB of weights
    small = load_profile("board")
    report = estimate_model(big, small)
    assert report["memory"]["fits"]  # 4 GB
    tiny = _with_ram(profile, 4)
    report = estimate_model(big, tiny)
    assert not report["memory"]["fits"]
    with pytest.raises(ResourceLimitError, match=r"needs an estimated 12\.\d MB of RAM .* has 4 MB"):
        check_limits(report, tiny)


def _with_ram(profile, ram_mb):
    from dataclasses import replace

    return replace(profile, memory=replace(profile.memory, ram_mb=ram_mb))


def test_precision_follows_the_measured_kernels(calibrated):
    # An ARM board without dot-product: int8 convolutions measured slower than fp32.
    slow_int8 = calibrated([_kernel("conv3x3", "fp32", ms=0.05), _kernel("conv3x3", "int8", ms=0.09)])
    stats = analyse(float_model(KernelSpec("conv3x3", (1, 16, 32, 32), repeat=2)))
    precision, reason = choose_precision(slow_int8, stats)
    assert precision == "none"
    assert "none 0.1" in reason and "int8 0.1" in reason and "testboard" in reason
    fast_int8 = calibrated([_kernel("conv3x3", "fp32", ms=0.05), _kernel("conv3x3", "int8", ms=0.02)], name="b2")
    assert choose_precision(fast_int8, stats)[0] == "int8"
    precision, reason = choose_precision(load_profile("rpi4"), stats)
    assert precision == "int8" and "no measured tables" in reason  # rpi4's quantization.default


def test_format_follows_the_faster_measured_runtime(calibrated):
    both = calibrated([_kernel(ms=0.05), _kernel(ms=0.02, runtime="litert"),
                       _kernel("gemm", shape=(1, 256), ms=0.01), _kernel("gemm", shape=(1, 256), ms=0.005,
                                                                          runtime="litert")])
    fmt, reason = choose_format(both)
    assert fmt == "tflite" and "litert is 2.24x faster than onnxruntime over 2 fp32 kernels" in reason
    one = calibrated([_kernel()], name="b3")
    assert choose_format(one) == ("tflite", "profile runtime.format = 'tflite'; only onnxruntime measured on "
                                            "testboard")


def test_threads_are_the_fewest_within_5_percent_of_the_fastest():
    def doc(ms):
        return {"latency_ms": {"p50": ms}}

    probes = [(KernelSpec("conv3x3", (1, 8, 8, 8), threads=t, purpose="threads"), doc(ms))
              for t, ms in ((1, 10.0), (2, 5.2), (3, 5.0), (4, 5.1))]
    assert choose_threads(probes) == (2, [1.0, 1.923, 2.0, 1.961])
    busy = [(KernelSpec("conv3x3", (1, 8, 8, 8), threads=t, purpose="threads"), doc(ms))
            for t, ms in ((1, 10.0), (2, 10.2))]
    assert choose_threads(busy)[0] == 1


def test_dynamic_batch_takes_the_given_input_shapes():
    from edgec.targets.model_stats import pin_input_shapes

    model = conv_net()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    one = analyse(model)
    pin_input_shapes(model, [(2, 3, 8, 8)])
    two = analyse(model)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert two.nodes[0].flops == 2 * one.nodes[0].flops
    assert two.weights_bytes == one.weights_bytes
