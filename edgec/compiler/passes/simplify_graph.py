"""Graph simplification with onnxslim: constant folding, dead-node removal, op fusion, Constant -> initializer.

Constant nodes must become initializers before quantization: onnxruntime's quantizer skips weights held in
Constant nodes and the "int8" model comes out larger than the float one.

onnxslim can also change what a model computes: its shape inference has replaced TF-style "same" padding
chains (Shape -> Slice -> Cast -> Pad) with wrong constants. So every slimmed graph is run against the original
on seeded inputs; one that differs is retried without onnxslim's shape inference, then dropped, with a note.
"""

from __future__ import annotations

import collections

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common

from edgec import ir as edgec_ir
from edgec.compare import FLOAT_ATOL, FLOAT_RTOL, compare_outputs, matches
from edgec.compiler.passes import FunctionalEdgecPass

__all__ = ["SimplifyGraph"]


def _op_counts(model: ir.Model) -> collections.Counter:
    return collections.Counter(node.op_type for node in model.graph)


def _probe_inputs(proto) -> list[np.ndarray] | None:
    """Seeded inputs for the graph's inputs (symbolic dimensions = 1); None when a dtype is not numeric."""
    from onnx import helper

    rng = np.random.default_rng(0)
    arrays = []
    for value in proto.graph.input:
        tensor = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else 1 for d in tensor.shape.dim]
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        if np.issubdtype(dtype, np.floating):
            arrays.append(rng.standard_normal(shape).astype(dtype))
        elif np.issubdtype(dtype, np.integer):
            arrays.append(np.zeros(shape, dtype))
        else:
            return None
    return arrays


def _outputs(proto, inputs) -> list[np.ndarray] | None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return session.run(None, {i.name: a for i, a in zip(session.get_inputs(), inputs)})
    except Exception:  # a graph onnxruntime cannot run here cannot be compared; the caller decides
        return None


class SimplifyGraph(FunctionalEdgecPass):
    name = "simplify"

    def _slim(self, proto):
        """The first onnxslim result that computes what ``proto`` computes, or None."""
        import onnxslim

        inputs = _probe_inputs(proto)
        reference = _outputs(proto, inputs) if inputs is not None else None
        for label, kwargs in (("", {}), (" without shape inference", {"no_shape_infer": True})):
            try:
                slim = onnxslim.slim(proto, model_check=False, **kwargs)
            except Exception as exc:  # a helper's crash must not become the user's traceback
                self.note(f"onnxslim{label} failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
                continue
            if reference is None:
                self.note("outputs not compared (onnxruntime cannot run the graph on probe inputs)")
                return slim
            got = _outputs(slim, inputs)
            if matches(reference, got):
                return slim
            diff = max((r["rel_diff"] for r in compare_outputs([""] * len(reference), reference, got or [],
                                                                FLOAT_RTOL, FLOAT_ATOL)), default=float("inf"))
            self.note(f"onnxslim{label} changed the outputs (relative difference {diff:.3g}): result discarded")
        return None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = _op_counts(model)
        proto = edgec_ir.to_proto(model)
        slim = self._slim(proto)
        if slim is None:
            self.note("graph left unsimplified")
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
