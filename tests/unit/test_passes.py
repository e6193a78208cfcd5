"""``edgec/compiler/passes/`` holds passes only, each with a unit test; the quantizers outside it keep one
interface (``edgec.compiler.quantizers.Quantizer``); and the two passes no other unit test covers
(``InferShapes``, ``SimplifyGraph``) on small graphs."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec import ir as edgec_ir
from edgec.compiler.passes import EdgecPass, FunctionalEdgecPass
from edgec.compiler.passes.infer_shapes import InferShapes
from edgec.compiler.passes.simplify_graph import SimplifyGraph
from edgec.compiler.quantizers import Quantizer

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PASSES = ROOT / "edgec" / "compiler" / "passes"


def _pass_classes() -> dict[str, list[str]]:
    """module -> the edgec pass classes it defines."""
    found = {}
    for path in sorted(PASSES.glob("*.py")):
        if path.name == "__init__.py":
            continue
        module = importlib.import_module(f"edgec.compiler.passes.{path.stem}")
        found[path.stem] = [name for name, obj in vars(module).items() if inspect.isclass(obj)
                            and obj.__module__ == module.__name__ and issubclass(obj, (EdgecPass, FunctionalEdgecPass))]
    return found


def test_every_module_in_passes_defines_a_pass():
    helpers = sorted(module for module, classes in _pass_classes().items() if not classes)
    assert not helpers, f"not passes: move them out of edgec/compiler/passes/ (quantizers/, pruning/...): {helpers}"


def test_every_pass_has_a_unit_test():
    unit_tests = [ast.parse(p.read_text()) for p in (ROOT / "tests" / "unit").glob("test_*.py")]
    used = {node.id for tree in unit_tests for node in ast.walk(tree) if isinstance(node, ast.Name)}
    missing = sorted(cls for classes in _pass_classes().values() for cls in classes if cls not in used)
    assert not missing, f"passes without a unit test in tests/unit/: {missing}"


@pytest.mark.parametrize("module, cls", [("int8", "Int8Quantizer"), ("int4", "Int4Quantizer"),
                                         ("fp16", "Fp16Converter")])
def test_each_quantizer_has_the_protocols_methods(module, cls):
    quantizer = getattr(importlib.import_module(f"edgec.compiler.quantizers.{module}"), cls)
    for method in ("settings", "quantize"):
        wanted = list(inspect.signature(getattr(Quantizer, method)).parameters)
        got = inspect.signature(getattr(quantizer, method)).parameters
        assert list(got)[:len(wanted)] == wanted, (cls, method)
        # anything beyond the protocol is optional (Int8Quantizer's ``exact``): protocol calls still work
        assert all(p.default is not inspect.Parameter.empty for p in list(got.values())[len(wanted):]), (cls, method)


def _model(nodes, inits, out_shape=None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(a, n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_infer_shapes_annotates_every_value_and_says_how_many():
    w = np.ones((4, 3), np.float32)
    proto = _model([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
                   {"w": w})
    model = edgec_ir.from_proto(proto)
    assert model.graph.node(0).outputs[0].shape is None
    infer = InferShapes()
    result = infer(model)
    assert list(result.model.graph.node(0).outputs[0].shape) == [2, 3]
    assert list(result.model.graph.outputs[0].shape) == [2, 3]
    assert infer.notes == ["2 values gained a shape; 0 remain without one"]


def test_simplify_folds_constants_and_keeps_what_the_graph_computes():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    proto = _model([helper.make_node("Add", ["a", "b"], ["w"]),  # a constant subgraph: folded into one weight
                    helper.make_node("MatMul", ["x", "w"], ["y"])], {"a": a, "b": b}, [2, 3])
    x = rng.standard_normal((2, 4)).astype(np.float32)
    simplify = SimplifyGraph()
    result = simplify(edgec_ir.from_proto(proto))
    assert result.modified
    assert [n.op_type for n in result.model.graph] == ["MatMul"]
    np.testing.assert_allclose(_run(edgec_ir.to_proto(result.model), x), _run(proto, x), rtol=1e-6)
    assert any("removed 1 Add" in note for note in simplify.notes), simplify.notes
