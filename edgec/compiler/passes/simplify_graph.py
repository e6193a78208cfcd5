"""Graph simplification with onnxslim: constant folding, dead-node removal, op fusion, Constant -> initializer.

Constant nodes must become initializers before quantization: onnxruntime's quantizer skips weights held in
Constant nodes and the "int8" model comes out larger than the float one.
"""

from __future__ import annotations

import collections

import onnx_ir as ir
import onnx_ir.passes.common

from edgec import ir as edgec_ir
from edgec.compiler.passes import FunctionalEdgecPass

__all__ = ["SimplifyGraph"]


def _op_counts(model: ir.Model) -> collections.Counter:
    return collections.Counter(node.op_type for node in model.graph)


class SimplifyGraph(FunctionalEdgecPass):
    name = "simplify"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        import onnxslim

        before = _op_counts(model)
        proto = edgec_ir.to_proto(model)
        try:
            slim = onnxslim.slim(proto, model_check=False)
        except Exception as exc:  # a helper's crash must not become the user's traceback: keep the graph
            self.note(f"onnxslim failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                      "graph left unsimplified")
            return ir.passes.PassResult(edgec_ir.from_proto(proto), False)
        new = edgec_ir.from_proto(slim)
        new.graph.name = model.graph.name
        result = ir.passes.common.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=0)(new)
        after = _op_counts(result.model)
        removed = {op: before[op] - after.get(op, 0) for op in before if before[op] > after.get(op, 0)}
        added = {op: after[op] - before.get(op, 0) for op in after if after[op] > before.get(op, 0)}
        self.note(f"nodes {sum(before.values())} -> {sum(after.values())}"
                  + (f"; removed {_fmt(removed)}" if removed else "")
                  + (f"; added {_fmt(added)}" if added else ""))
        return ir.passes.PassResult(result.model, before != after)


def _fmt(counts: dict) -> str:
    return ", ".join(f"{n} {op}" for op, n in sorted(counts.items()))
