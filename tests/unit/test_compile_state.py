"""The compile's shared state (``edgec.compiler.state``): typed fields, the accuracy budget in one place, a fallback
snapshot that later stages cannot reach into, and the one pass runner/record every stage uses."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from edgec.compiler.options import CompileOptions
from edgec.compiler.passes.fold_batchnorm import FoldBatchNorm
from edgec.compiler.state import CompileState, pass_record, run_passes
from edgec.targets import load_profile

pytestmark = pytest.mark.unit


def _state(**options) -> CompileState:
    return CompileState(CompileOptions(target="rpi4", **options), load_profile("rpi4"), "tflite", {"inputs": []})


def test_the_budget_is_the_option_else_the_profiles():
    assert _state().budget == load_profile("rpi4").quantization.max_accuracy_drop
    assert _state(max_accuracy_drop=0.25).budget == 0.25
    assert _state(max_accuracy_drop=0.0).budget == 0.0  # zero is a budget, not "unset"


def test_a_misspelt_field_is_refused():
    state = _state()
    state.precision = "int8"
    assert state.precision == "int8"
    with pytest.raises(AttributeError):
        state.calibraton = 1  # a typo of calibration


def test_a_snapshot_keeps_the_report_as_it_was():
    state = _state()
    state.report["format"] = {"chosen": "tflite"}
    saved = state.snapshot()
    state.report["quantization"] = {"precision": "int8"}
    state.precision, state.quantized = "int8", True
    assert saved.report == {"format": {"chosen": "tflite"}}
    assert saved.precision is None and not saved.quantized


def _conv_bn() -> ir.Model:
    rng = np.random.default_rng(0)

    def init(name, array):
        return ir.Value(name=name, const_value=ir.tensor(array.astype(np.float32)))

    x = ir.Value(name="x", shape=ir.Shape([1, 2, 4, 4]), type=ir.TensorType(ir.DataType.FLOAT))
    weights = [init("w", rng.normal(size=(3, 2, 1, 1))), init("s", rng.random(3) + 0.5), init("b", rng.random(3)),
               init("m", rng.random(3)), init("v", rng.random(3) + 0.5)]
    conv = ir.node("Conv", [x, weights[0]], name="conv")
    bn = ir.node("BatchNormalization", [conv.outputs[0], *weights[1:]], name="bn")
    bn.outputs[0].name = "y"
    graph = ir.Graph([x], [bn.outputs[0]], nodes=[conv, bn], initializers=weights, opset_imports={"": 17})
    return ir.Model(graph, ir_version=8)


def test_run_passes_records_each_pass_with_its_node_counts():
    model, records = run_passes(_conv_bn(), [FoldBatchNorm()])
    (record,) = records
    assert record["name"] == FoldBatchNorm.name and record["modified"] is True
    assert (record["nodes_before"], record["nodes_after"]) == (2, model.graph.num_nodes()) == (2, 1)
    assert record["notes"] and isinstance(record["settings"], dict)


def test_a_pass_record_copies_its_notes():
    notes = ["kept"]
    record = pass_record("emit-onnx", {"threads": 2}, notes, False, recovery={"seconds": 1})
    notes.append("later")
    assert record == {"name": "emit-onnx", "settings": {"threads": 2}, "modified": False, "notes": ["kept"],
                      "recovery": {"seconds": 1}}
