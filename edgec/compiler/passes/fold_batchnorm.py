"""Fold inference-mode BatchNormalization into the Conv that feeds it.

``y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta`` becomes a Conv with scaled weights and a new bias.
A BatchNormalization that does not follow a foldable Conv is left alone, with the reason in the report.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgec.compiler.passes import NodeRewritePass, const, set_input_const

__all__ = ["FoldBatchNorm"]


def _why_not(bn: ir.Node) -> str | None:
    conv = bn.inputs[0].producer() if bn.inputs[0] is not None else None
    if conv is None or conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx"):
        return "input is not produced by a Conv"
    if len(bn.outputs) > 1 and any(o.uses() for o in bn.outputs[1:]):
        return "training-mode outputs are used"
    conv_out = conv.outputs[0]
    if len(conv_out.uses()) != 1 or conv_out.is_graph_output():
        return f"Conv {conv.name!r} output has other consumers"
    if const(conv.inputs[1]) is None or (len(conv.inputs) > 2 and conv.inputs[2] is not None
                                            and const(conv.inputs[2]) is None):
        return f"Conv {conv.name!r} weights are not constant"
    if any(const(v) is None for v in bn.inputs[1:5]):
        return "BatchNormalization parameters are not constant"
    return None


def _fold(graph: ir.Graph, bn: ir.Node) -> None:
    conv = bn.inputs[0].producer()
    weight = const(conv.inputs[1]).astype(np.float64)
    bias = (const(conv.inputs[2]).astype(np.float64) if len(conv.inputs) > 2 and conv.inputs[2] is not None
            else np.zeros(weight.shape[0]))
    gamma, beta, mean, var = (const(v).astype(np.float64) for v in bn.inputs[1:5])
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


class FoldBatchNorm(NodeRewritePass):
    name = "fold-batchnorm"
    op_type = "BatchNormalization"
    done_note = "folded {count} BatchNormalization into Conv"

    def why_not(self, node: ir.Node) -> str | None:
        return _why_not(node)

    def rewrite(self, graph: ir.Graph, node: ir.Node) -> None:
        _fold(graph, node)
