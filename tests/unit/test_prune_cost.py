"""Channel removal cost: a channel the calibration samples leave silent is not taken for a dead one."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from edgec import ir as edgec_ir
from edgec.compiler.passes.prune_filters import prunable_groups, removal_cost
from edgec.compiler.pruning.channel_groups import analyse_groups


def _model() -> ir.Model:
    """x[N,2,4,4] -> Conv 1x1 (3 channels) -> Relu -> Conv 1x1 (2 channels)."""
    produce = np.array([[-1.0, -1.0], [1.0, 0.0], [0.0, 1.0]], np.float32).reshape(3, 2, 1, 1)
    # channel 0: silent on positive inputs, but its consumer leans on it; channel 1: active, barely used
    consume = np.array([[10.0, 0.1, 1.0], [10.0, 0.1, 1.0]], np.float32).reshape(2, 3, 1, 1)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["a"], name="produce"), helper.make_node("Relu", ["a"], ["r"]),
         helper.make_node("Conv", ["r", "w2"], ["y"], name="consume")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2, 4, 4])],
        [numpy_helper.from_array(produce, "w1"), numpy_helper.from_array(consume, "w2")])
    return edgec_ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))


def test_a_channel_silent_on_the_calibration_data_is_not_the_first_to_go():
    model = _model()
    analysis = analyse_groups(model.graph)
    groups = prunable_groups(analysis)
    group = next(g for g in groups if g.name == "produce")
    x = np.random.default_rng(0).uniform(0.5, 1.5, size=(8, 2, 4, 4)).astype(np.float32)  # all positive
    cost = removal_cost(model, analysis, groups, [[x]])[group.gid]
    # energy x column weight alone: channel 0 costs exactly 0 and would go first; a few photos that never excite a
    # channel are no evidence that no input does
    assert cost[0] > cost[1] > 0
    assert np.argmin(cost) == 1
