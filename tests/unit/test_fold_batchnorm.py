"""BatchNormalization folding: numerically exact, and explains what it kept."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec import ir as edgec_ir
from edgec.compiler.passes.fold_batchnorm import FoldBatchNorm

pytestmark = pytest.mark.unit


def _model(bn_after_conv: bool = True) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")]
    for name, values in (("g", rng.uniform(0.5, 1.5, 4)), ("beta", rng.standard_normal(4)),
                         ("mean", rng.standard_normal(4)), ("var", rng.uniform(0.5, 2, 4))):
        inits.append(numpy_helper.from_array(values.astype(np.float32), name))
    bn_input = "c" if bn_after_conv else "r"
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("BatchNormalization", [bn_input, "g", "beta", "mean", "var"], ["y"], name="bn",
                              epsilon=1e-3)]
    if bn_after_conv:
        nodes[1], nodes[2] = helper.make_node("BatchNormalization", ["c", "g", "beta", "mean", "var"], ["n"],
                                              name="bn", epsilon=1e-3), helper.make_node("Relu", ["n"], ["y"])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_conv_batchnorm_folds_exactly():
    proto = _model()
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    pass_ = FoldBatchNorm()
    result = pass_(edgec_ir.from_proto(proto))
    folded = edgec_ir.to_proto(result.model)
    assert result.modified
    assert [n.op_type for n in folded.graph.node] == ["Conv", "Relu"]
    np.testing.assert_allclose(_run(folded, x), _run(proto, x), rtol=1e-5, atol=1e-5)
    assert pass_.notes[0] == "folded 1 BatchNormalization into Conv"


def test_batchnorm_after_relu_is_kept_with_reason():
    pass_ = FoldBatchNorm()
    result = pass_(edgec_ir.from_proto(_model(bn_after_conv=False)))
    assert not result.modified
    assert any("kept BatchNormalization bn: input is not produced by a Conv" in n for n in pass_.notes)
