"""Adaptive int8 rounding, sensitivity groups, equalization headroom: small graphs run with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec import ir as edgec_ir
from edgec.compiler.calibration import CalibrationSet

pytestmark = pytest.mark.unit


def _stem_net(rng, bias: float = 1.0):
    """A stem Conv(6, 3x3, stride 2) -> ReLU6 -> depthwise Conv(6, 5x5) -> ReLU6 -> 1x1 Conv(4) -> Flatten -> Gemm."""
    spread = 10.0 ** np.linspace(-2, 0.5, 6)  # very unequal channel ranges: equalization scales some of them up
    inits = {"w1": rng.standard_normal((6, 3, 3, 3)) * spread[:, None, None, None] * 2, "b1": rng.standard_normal(6) * bias,
             "w2": rng.standard_normal((6, 1, 5, 5)), "b2": rng.standard_normal(6) * 0.1 * bias,
             "w3": rng.standard_normal((4, 6, 1, 1)), "w4": rng.standard_normal((3, 64)) * 0.2,
             "b4": np.zeros(3), "lo": np.array(0.0), "hi": np.array(6.0)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="stem", pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Clip", ["a", "lo", "hi"], ["r"], name="clip"),
             helper.make_node("Conv", ["r", "w2", "b2"], ["d"], name="dw", pads=[2, 2, 2, 2], group=6),
             helper.make_node("Clip", ["d", "lo", "hi"], ["e"], name="clip2"),
             helper.make_node("Conv", ["e", "w3"], ["p"], name="pw"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w4", "b4"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return edgec_ir.from_proto(onnx.shape_inference.infer_shapes(proto))


def test_adaptive_rounding_picks_floor_or_ceiling_and_lowers_the_output_error():
    from edgec.compiler.quantizers.rounding import round_rows

    rng = np.random.default_rng(0)
    x = rng.uniform(-20, 20, (6, 12))
    patches = rng.standard_normal((12, 400)) + rng.standard_normal((1, 400))  # correlated inputs
    cov = np.cov(patches)
    q = round_rows(x, cov)
    assert np.all((q == np.floor(x)) | (q == np.ceil(x)))
    nearest = np.round(x)
    error = np.einsum("ri,ij,rj->", x - q, cov, x - q)
    assert error < 0.8 * np.einsum("ri,ij,rj->", x - nearest, cov, x - nearest)
    np.testing.assert_array_equal(q, round_rows(x, cov))  # deterministic
    per_row = round_rows(x[:, :4], np.stack([np.cov(patches[:4])] * 6))  # depthwise form: one covariance per row
    assert np.all((per_row == np.floor(x[:, :4])) | (per_row == np.ceil(x[:, :4])))


def test_adaptive_rounding_of_a_small_net_stays_on_the_quantizer_grid():
    from edgec.compiler.quantizers.int8 import Int8Quantizer
    from edgec.compiler.quantizers.rounding import AdaptiveRounding
    from edgec.targets import load_profile
    rng = np.random.default_rng(3)
    model = _stem_net(rng)
    base = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    samples = CalibrationSet("calib", [(base + 0.3 * rng.standard_normal((24, 3, 8, 8))).astype(np.float32)])
    spec = load_profile("x86-avx512-vnni").quantization
    rounding = AdaptiveRounding(model, samples, spec.per_channel, spec.reduce_range)
    assert {r["node"] for r in rounding.rows} == {"stem", "dw", "pw", "fc"}
    for row in rounding.rows:
        assert row["kept"] == (row["adaptive_error"] < row["nearest_error"])
    assert rounding.replacements  # correlated inputs: at least one layer gains on held-out samples
    quantizer = Int8Quantizer(model, samples, spec, "minmax", False)
    quantizer.rounding = rounding.replacements
    proto = quantizer.quantize()
    ints = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for name, (weight, _) in rounding.replacements.items():
        stored = next(v for k, v in ints.items() if k.startswith(name) and v.dtype == np.int8
                      and v.shape == weight.shape)
        scale = np.abs(weight).reshape(len(weight), -1).max(1) / 127
        np.testing.assert_array_equal(stored.reshape(len(weight), -1),
                                      np.round(weight.reshape(len(weight), -1) / scale[:, None]))


def test_sensitivity_groups_put_a_layer_with_the_activation_it_alone_feeds():
    from edgec.compiler.stages.quantize_select import sensitivity_groups
    model = _stem_net(np.random.default_rng(0))
    groups = sensitivity_groups(model, ["stem", "dw", "pw", "fc"])
    assert groups == {"stem": {"stem", "clip"}, "dw": {"dw", "clip2"}, "pw": {"pw"}, "fc": {"fc"}}


def test_equalized_relu6_pairs_stay_the_float_model_beyond_the_calibration_range():
    from edgec.compiler.passes.equalize_layers import EqualizeLayers
    from edgec.compiler.quantizers.common import proto_runner

    rng = np.random.default_rng(5)
    model = _stem_net(rng, bias=0.0)  # no biases: 1.5x the input is 1.5x every pre-activation
    calib = CalibrationSet("calib", [rng.standard_normal((16, 3, 8, 8)).astype(np.float32)])
    before = proto_runner(edgec_ir.to_proto(model))
    equalize = EqualizeLayers(calib, absorb_bias=True)
    equalize(model)
    after = proto_runner(edgec_ir.to_proto(model))
    assert "equalized 2 layer pairs" in equalize.notes[0]
    # Inputs 1.5x the calibration samples (no channel the float model leaves unclipped saturates): within the 2x
    # headroom the equalized model is exact; scaled to the clip by the calibration data (headroom 1) it was not.
    wider = (1.5 * calib.read(0, 16)[0]).astype(np.float32)
    for x in wider:
        expected = before([x[None]])[0]
        np.testing.assert_allclose(after([x[None]])[0], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_tools_and_ranges_go_by_output_noise_unless_a_drop_is_decisively_lower():
    from edgec.compiler.stages.quantize import _best_tools

    def entry(drop, noise, interval):
        return ((drop, noise), None, None, [], interval)

    tried = {"minmax": entry(0.30, 2.1e-2, (0.1, 0.6)), "mse": entry(0.40, 1.8e-2, (0.1, 0.8))}
    assert _best_tools(tried, "minmax") == "mse"  # drops overlap: the continuous measure decides
    tried["minmax"] = entry(0.05, 2.1e-2, (0.0, 0.2))
    assert _best_tools(tried, "minmax") == "minmax"  # its whole interval is below mse's estimate
    tried = {"minmax": entry(0.3, 2e-2, (0.1, 0.6)), "mse": entry(0.3, 2e-2, (0.1, 0.6))}
    assert _best_tools(tried, "minmax") == "minmax"  # ties: the profile's choice
