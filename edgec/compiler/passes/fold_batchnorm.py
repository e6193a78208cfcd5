"""Fold inference-mode BatchNormalization into the Conv that feeds it.

``y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta`` becomes a Conv with scaled weights and a new bias.
A BatchNormalization that does not follow a foldable Conv is left alone, with the reason in the report.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common

from edgec.compiler.passes import EdgecPass, set_input_const

__all__ = ["FoldBatchNorm"]


def _const(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def _why_not(bn: ir.Node) -> str | None:
    conv = bn.inputs[0].producer() if bn.inputs[0] is not None else None
    if conv is None or conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx"):
        return "input is not produced by a Conv"
    if len(bn.outputs) > 1 and any(o.uses() for o in bn.outputs[1:]):
        return "training-mode outputs are used"
    conv_out = conv.outputs[0]
    if len(conv_out.uses()) != 1 or conv_out.is_graph_output():
        return f"Conv {conv.name!r} output has other consumers"
    if _const(conv.inputs[1]) is None or (len(conv.inputs) > 2 and conv.inputs[2] is not None
                                            and _const(conv.inputs[2]) is None):
        return f"Conv {conv.name!r} weights are not constant"
    if any(_const(v) is None for v in bn.inputs[1:5]):
        return "BatchNormalization parameters are not constant"
    return None


def _fold(graph: ir.Graph, bn: ir.Node) -> None:
    conv = bn.inputs[0].producer()
    weight = _const(conv.inputs[1]).astype(np.float64)
    bias = (_const(conv.inputs[2]).astype(np.float64) if len(conv.inputs) > 2 and conv.inputs[2] is not None
            else np.zeros(weight.shape[0]))
    gamma, beta, mean, var = (_const(v).astype(np.float64) for v in bn.inputs[1:5])
    eps = bn.attributes.get_float("epsilon", 1e-5)
    scale = gamma / np.sqrt(var + eps)
    dtype = conv.inputs[1].const_value.dtype.numpy()
    new_weight = (weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))).astype(dtype)
    new_bias = ((bias - mean) * scale + beta).astype(dtype)
    set_input_const(graph, conv, 1, new_weight, f"{conv.name or 'conv'}_folded_weight")
    set_input_const(graph, conv, 2, new_bias, f"{conv.name or 'conv'}_folded_bias")
    out = bn.outputs[0]
    is_output = out.is_graph_output()
    out.replace_all_uses_with(conv.outputs[0], replace_graph_outputs=True)
    if is_output:  # keep the graph output's name
        name = out.name
        out.name = f"{name}_unfolded"
        conv.outputs[0].name = name
    graph.remove(bn, safe=True)


class FoldBatchNorm(EdgecPass):
    name = "fold-batchnorm"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        folded, kept = 0, []
        for node in list(model.graph):
            if node.op_type != "BatchNormalization" or node.domain not in ("", "ai.onnx"):
                continue
            reason = _why_not(node)
            if reason:
                kept.append(f"{node.name or '(unnamed)'}: {reason}")
                continue
            _fold(model.graph, node)
            folded += 1
        self.note(f"folded {folded} BatchNormalization into Conv")
        for item in kept:
            self.note(f"kept BatchNormalization {item}")
        if folded:
            ir.passes.common.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, folded > 0)
