"""The quantization passes on small graphs built in code, run with onnxruntime: function kept, effect achieved."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec import ir as edgec_ir
from edgec.compiler.calibration import CalibrationSet
from edgec.compiler.quantizers.common import proto_runner

pytestmark = pytest.mark.unit


def _model(nodes, inits, in_shape, out_shape):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return edgec_ir.from_proto(onnx.shape_inference.infer_shapes(proto))


def _conv_chain(rng, clip: bool):
    """Conv(8) -> ReLU or ReLU6 -> depthwise Conv(8) -> ReLU -> Conv(4, 1x1), with very unequal channel ranges."""
    spread = 10.0 ** rng.uniform(-2, 1, 8)
    inits = {"w1": rng.standard_normal((8, 3, 3, 3)) * spread[:, None, None, None] * 0.3,
             "b1": rng.standard_normal(8) * spread * 0.1 + 0.5,
             "w2": rng.standard_normal((8, 1, 3, 3)), "b2": rng.standard_normal(8) * 0.1,
             "w3": rng.standard_normal((4, 8, 1, 1)), "b3": np.zeros(4), "lo": np.array(0.0), "hi": np.array(6.0)}
    act = (helper.make_node("Clip", ["a", "lo", "hi"], ["r"], name="clip") if clip
           else helper.make_node("Relu", ["a"], ["r"], name="relu"))
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="conv1", pads=[1, 1, 1, 1]), act,
             helper.make_node("Conv", ["r", "w2", "b2"], ["d"], name="dw", pads=[1, 1, 1, 1], group=8),
             helper.make_node("Relu", ["d"], ["e"], name="relu2"),
             helper.make_node("Conv", ["e", "w3", "b3"], ["y"], name="pw")]
    return _model(nodes, inits, [1, 3, 8, 8], [1, 4, 8, 8])


def _samples(rng, shape, count=16):
    return CalibrationSet("calib", [rng.standard_normal((count, *shape[1:])).astype(np.float32)])


@pytest.mark.parametrize("clip", [False, True])
def test_equalization_keeps_the_function_and_evens_the_ranges(clip):
    from edgec.compiler.passes.equalize_layers import EqualizeLayers

    rng = np.random.default_rng(0)
    model = _conv_chain(rng, clip)
    samples = _samples(rng, [1, 3, 8, 8])
    before = proto_runner(edgec_ir.to_proto(model))
    x = samples.read(0, 1)
    expected = before(x)[0]
    equalize = EqualizeLayers(samples, absorb_bias=True)
    equalize(model)
    got = proto_runner(edgec_ir.to_proto(model))(x)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    ratios = [float(s.split("ratio ")[1].split(" -> ")[0]) for s in equalize.notes if "ratio" in s]
    after = float(equalize.notes[0].split(" -> ")[1])
    assert "equalized 2 layer pairs" in equalize.notes[0]
    if not clip:  # ReLU6 channels may only be scaled as far as the data stay below the clip
        assert after < ratios[0] / 2


def test_rewrite_gemm_keeps_the_function():
    from edgec.compiler.passes.rewrite_gemm import RewriteGemm

    rng = np.random.default_rng(1)
    inits = {"w": rng.standard_normal((5, 6)), "b": rng.standard_normal(5)}
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1, alpha=0.5, beta=2.0)
    model = _model([node], inits, [3, 6], [3, 5])
    x = [rng.standard_normal((3, 6)).astype(np.float32)]
    expected = proto_runner(edgec_ir.to_proto(model))(x)[0]
    rewrite = RewriteGemm()
    rewrite(model)
    assert [n.op_type for n in model.graph] == ["MatMul", "Add"] and [v.name for v in model.graph.outputs] == ["y"]
    np.testing.assert_allclose(proto_runner(edgec_ir.to_proto(model))(x)[0], expected, rtol=1e-5, atol=1e-5)


def test_bias_correction_cancels_the_mean_shift_of_weight_rounding():
    from edgec.compiler.passes.correct_bias import CorrectBias, fake_quantize_weight, input_means

    rng = np.random.default_rng(2)
    weight = rng.standard_normal((16, 64)) * 0.05
    weight[:, 0] = 3.0  # one large weight per row makes the int8 step coarse for the rest
    inits = {"w": weight, "b": np.zeros(16)}
    model = _model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)], inits, [1, 64], [1, 16])
    samples = CalibrationSet("calib", [(rng.standard_normal((64, 64)) + 2.0).astype(np.float32)])
    x = samples.read(0, 64)[0]
    float_out = x @ weight.T
    w_q = fake_quantize_weight(weight.astype(np.float32), 0, False, "int8", False)
    shift_before = np.abs((x @ w_q.T - float_out).mean(0)).max()
    correct = CorrectBias(input_means(model, samples), per_channel=False)
    correct(model)
    bias = next(v for v in model.graph.initializers.values() if v.name.endswith("bc_bias")).const_value.numpy()
    shift_after = np.abs((x @ w_q.T + bias - float_out).mean(0)).max()
    assert shift_after < shift_before / 20 and "corrected the bias of 1" in correct.notes[0]


def test_mse_ranges_clip_a_rare_outlier_that_minmax_keeps():
    from edgec.compiler.quantizers.int8 import mse_ranges

    rng = np.random.default_rng(3)
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], {}, [1, 1 << 20], [1, 1 << 20])
    data = np.abs(rng.standard_normal((4, 1 << 20))).astype(np.float32)
    data[0, 0] = 60.0  # one value in 4 million: its clipping error is worth less than 8-bit steps 12x finer
    ranges = mse_ranges(model, CalibrationSet("calib", [data]), limit=4)
    low, high = (float(v) for v in (ranges.data["y"].range_value))
    assert low == 0.0 and 4.0 < high < 15.0


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile", "mse"])
def test_int8_quantizer_calibrates_with_each_method_and_excludes_nodes(method):
    from edgec.compiler.quantizers.int8 import Int8Quantizer, quantized_nodes
    from edgec.targets import load_profile

    rng = np.random.default_rng(4)
    model = _conv_chain(rng, clip=True)
    samples = _samples(rng, [1, 3, 8, 8], count=32)
    quantizer = Int8Quantizer(model, samples, load_profile("x86-avx512-vnni").quantization, method, True, 32)
    x = samples.read(0, 1)
    expected = proto_runner(edgec_ir.to_proto(model))(x)[0]
    full = quantizer.quantize()
    assert {"conv1", "dw", "pw"} <= quantized_nodes(full)
    got = proto_runner(full)(x)[0]
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 0.1
    partial = quantizer.quantize(exclude={"dw"})
    assert "dw" not in quantized_nodes(partial) and "pw" in quantized_nodes(partial)
