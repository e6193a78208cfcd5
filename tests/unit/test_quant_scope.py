"""Static int8's structure rules and the guard's derived variants, on small graphs built in code: a recurrent op
and its state path stay float, weightless op types are grouped, a derived variant computes what onnxruntime's
quantizer makes for the same exclusions, and the accuracy measure for step classifiers and empty maps."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec import ir as edgec_ir
from edgec.compiler.calibration import CalibrationSet
from edgec.compiler.quantizers.common import proto_runner

pytestmark = pytest.mark.unit


def _lstm_model(rng):
    """x -> Conv -> Relu -> (as a sequence) LSTM with its state gathered from a ``state`` input; h -> Conv ->
    Sigmoid (the output) and Concat(h, c) -> ``stateN`` (fed back by the caller)."""
    hidden = 4
    inits = {"w": rng.standard_normal((hidden, 1, 3)) * 0.5, "b": np.zeros(hidden),
             "W": rng.standard_normal((1, 4 * hidden, hidden)) * 0.3,
             "R": rng.standard_normal((1, 4 * hidden, hidden)) * 0.3,
             "w2": rng.standard_normal((1, hidden, 1)), "b2": np.zeros(1)}
    ints = {"i0": np.array([0], np.int64), "i1": np.array([1], np.int64)}
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Transpose", ["r"], ["seq"], name="to_seq", perm=[2, 0, 1]),
        helper.make_node("Gather", ["state", "i0"], ["h0"], name="gather_h", axis=0),
        helper.make_node("Gather", ["state", "i1"], ["c0"], name="gather_c", axis=0),
        helper.make_node("LSTM", ["seq", "W", "R", "", "", "h0", "c0"], ["", "h", "cell"], name="lstm",
                         hidden_size=hidden),
        helper.make_node("Concat", ["h", "cell"], ["stateN"], name="concat_state", axis=0),
        helper.make_node("Transpose", ["h"], ["hh"], name="to_map", perm=[1, 2, 0]),
        helper.make_node("Conv", ["hh", "w2", "b2"], ["logit"], name="head"),
        helper.make_node("Sigmoid", ["logit"], ["y"], name="prob"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6]),
                     helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, 1, hidden])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()]
        + [numpy_helper.from_array(v, k) for k, v in ints.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return edgec_ir.from_proto(onnx.shape_inference.infer_shapes(proto))


def test_recurrent_op_and_its_state_path_stay_float_and_the_rest_is_quantized():
    from edgec.compiler.quantizers.int8 import Int8Quantizer, quantized_nodes
    from edgec.compiler.quantizers.scope import float_scope
    from edgec.targets import load_profile

    rng = np.random.default_rng(0)
    model = _lstm_model(rng)
    scope = float_scope(model)
    assert set(scope) == {"lstm", "gather_h", "gather_c", "concat_state", "to_map"}
    assert "recurrent op" in scope["lstm"] and "loops back" in scope["gather_h"]
    xs, states = rng.standard_normal((8, 1, 1, 6)).astype(np.float32), rng.standard_normal((8, 2, 1, 4)) * 0.5
    samples = CalibrationSet("calib", reader=lambda a, b: [xs[a], states[a].astype(np.float32)], count=8,
                             max_batch=1)
    quantizer = Int8Quantizer(model, samples, load_profile("host").quantization, "minmax", False, 8)
    proto = quantizer.quantize()
    assert "conv" in quantized_nodes(proto) and not set(scope) & quantized_nodes(proto)
    # No Q/DQ on the state the caller feeds back, nor on the state input.
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    assert producers["stateN"] == "Concat"
    assert all(n.op_type != "QuantizeLinear" or n.input[0] != "state" for n in proto.graph.node)
    assert set(quantizer.groups) == {"ops:Relu", "ops:Sigmoid"}  # Transpose and Gather only move values


def _chain(rng):
    """Conv -> Relu -> Conv -> Add(skip) -> Conv: weighted layers and a weightless op between them."""
    inits = {"w1": rng.standard_normal((8, 3, 3, 3)) * 0.3, "b1": rng.standard_normal(8) * 0.1,
             "w2": rng.standard_normal((8, 8, 3, 3)) * 0.2, "b2": rng.standard_normal(8) * 0.1,
             "w3": rng.standard_normal((4, 8, 1, 1)), "b3": rng.standard_normal(4) * 0.1}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2", "b2"], ["d"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["d", "r"], ["s"], name="add"),
             helper.make_node("Conv", ["s", "w3", "b3"], ["y"], name="conv3")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return edgec_ir.from_proto(onnx.shape_inference.infer_shapes(proto))


@pytest.mark.parametrize(("exclude", "only"), [({"conv2"}, None), ({"ops:Add", "conv1"}, None), ({"conv1"}, None),
                                               ((), {"conv3"}), ((), {"conv2", "ops:Add"}), ((), {"conv1"})])
@pytest.mark.parametrize("bias_correction", [False, True])
def test_derived_variant_computes_what_onnxruntime_makes_for_the_same_float_nodes(exclude, only, bias_correction):
    from edgec.compiler.quantizers.int8 import Int8Quantizer, quantized_nodes
    from edgec.targets import load_profile

    rng = np.random.default_rng(1)
    model = _chain(rng)
    samples = CalibrationSet("calib", [rng.standard_normal((16, 3, 8, 8)).astype(np.float32)])
    quantizer = Int8Quantizer(model, samples, load_profile("host").quantization, "minmax", bias_correction, 16)
    assert quantizer.groups == {"ops:Relu": ["relu"], "ops:Add": ["add"]}
    derived = quantizer.quantize(exclude=exclude, only=only)
    exact = quantizer.quantize(exclude=exclude, only=only, exact=True)
    assert quantized_nodes(derived) == quantized_nodes(exact)
    # conv1's Relu reads nothing else: it goes to float and to int8 with conv1 (a float conv1 feeding a quantized
    # Relu would have its pre-activation output rounded)
    assert ("relu" in quantized_nodes(derived)) == ("conv1" in quantized_nodes(derived))
    def run(proto):
        runner = proto_runner(proto, unfused=True)
        return np.concatenate([runner(samples.read(k, k + 1))[0] for k in range(4)])

    full, got, want = run(quantizer.quantize()), run(derived), run(exact)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert not np.allclose(got, full)  # the variant differs from the fully quantized model


def test_step_classifier_is_measured_per_step_and_empty_maps_do_not_count():
    from edgec.compiler.accuracy import Evaluator

    rng = np.random.default_rng(2)
    logits = rng.standard_normal((6, 10, 5)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(2, keepdims=True)
    samples = CalibrationSet("eval", [np.arange(6, dtype=np.float32)[:, None]])
    evaluator = Evaluator(lambda inputs: [probs[inputs[0][:, 0].astype(int)]], samples, 6)
    assert evaluator.metric == "top-1 agreement with float per step"
    flipped = probs.copy()
    flipped[0, 0] = flipped[0, 0][::-1]  # one step of 60 decides otherwise (unless the row is symmetric)
    measured = evaluator.measure(lambda inputs: [flipped[inputs[0][:, 0].astype(int)]])
    assert measured["agreement"] == pytest.approx(100 * 59 / 60, abs=1e-3) and measured["samples"] == 6

    maps = np.zeros((4, 1, 8, 8), np.float32)
    maps[:2] = rng.uniform(0.5, 1.0, (2, 1, 8, 8))  # two samples with text; two scenes whose map is all 0
    detector = Evaluator(lambda inputs: [maps[inputs[0][:, 0].astype(int)]], samples.subset(0, 4), 4)
    noisy = maps + 1e-3 * (maps == 0)  # the quantized model's floor on the empty maps
    measured = detector.measure(lambda inputs: [noisy[inputs[0][:, 0].astype(int)]])
    assert measured["drop"] < 0.01 and measured["drop_interval"][1] < 0.01


def test_held_out_rows_of_whole_inputs_keep_their_shape():
    rows = np.arange(6 * 2 * 3, dtype=np.float32).reshape(6, 2, 3)

    def reader(start, stop):  # as the .npz reader does for a state input: one row is one whole input
        part = rows[start:stop]
        return [part[0] if len(part) == 1 else part]

    samples = CalibrationSet("calib", reader=reader, count=6, max_batch=1)
    held, _ = samples.random_split(0.5, 0)
    assert held.max_batch == 1
    for batch in held.batches(4):
        assert batch[0].shape == (2, 3)
