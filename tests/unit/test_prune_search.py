"""``--prune auto``'s last step: the full-recovery run at the chosen ratio measured over the budget."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from edgec import ir as edgec_ir
from edgec.compiler.stages import prune_search


def _model(width: int) -> ir.Model:
    weight = numpy_helper.from_array(np.ones((4, width), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])], [weight])
    return edgec_ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))


class _Trials:
    """Drop in points grows with the ratio; the full recovery budget makes a model *worse* than a probe's short one
    (distillation is judged on held-out output error, not on the metric the guard reads)."""

    def __init__(self):
        self.evaluator, self.runs = object(), []

    def recover_seconds(self) -> float:
        return 10.0

    def run(self, ratio: float = 0.0, seconds: float = 0.0):
        drop = 2.0 * ratio + (1.0 if seconds >= 10.0 and ratio > 0 else 0.0)
        self.runs.append((ratio, seconds))
        measured = {"score": 100.0 - drop, "drop": drop, "metric": "top-1 accuracy"}
        return _model(max(1, round(8 * (1 - ratio)))), [{"ratio": ratio}], [], measured


def test_a_final_run_over_the_budget_keeps_the_probe_that_held(monkeypatch):
    from edgec.compiler.stages import compress

    monkeypatch.setattr(compress, "within_budget", lambda measured, budget: measured["drop"] <= budget)
    trials = _Trials()
    (candidate, records, _, measured), report = prune_search._accuracy_search(trials, budget=1.0)
    assert candidate.graph.initializers["w"].const_value.numpy().shape == (4, 4)  # width 8 x (1 - 0.5)
    assert report["ratio"] == 0.5  # bisection over (0, 0.8): 0.4 and 0.5 hold, 0.6, 0.55 and 0.525 do not
    assert records == [{"ratio": 0.5}] and measured["drop"] == 1.0  # the probe's model, not the failed final run
    assert (0.0, 0.0) not in trials.runs  # no fall-back to the unpruned model
    assert any("kept the probe's model" in note for note in report["notes"])
