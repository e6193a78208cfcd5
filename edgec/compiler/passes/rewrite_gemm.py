"""Rewrite Gemm with a constant weight into MatMul (+ Add), so weight-only int4 quantization reaches it.

onnxruntime's MatMulNBits quantizer handles MatMul only: ``nn.Linear`` exports as Gemm and would be skipped
silently ("Unsupported operator Gemm"). ``alpha`` and ``transB`` are folded into the new [K, N] weight, ``beta``
into the bias.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgec.compiler.passes import NodeRewritePass, add_initializer, const

__all__ = ["RewriteGemm"]


def _why_not(node: ir.Node) -> str | None:
    if node.attributes.get_int("transA", 0):
        return "transA=1"
    weight = const(node.inputs[1])
    if weight is None or weight.ndim != 2 or not np.issubdtype(weight.dtype, np.floating):
        return "weight is not a constant float matrix"
    if len(node.inputs) > 2 and node.inputs[2] is not None and const(node.inputs[2]) is None:
        return "bias is not constant"
    return None


def _rewrite(graph: ir.Graph, node: ir.Node) -> None:
    weight = const(node.inputs[1])
    dtype = weight.dtype
    if node.attributes.get_int("transB", 0):
        weight = weight.T
    weight = (weight * node.attributes.get_float("alpha", 1.0)).astype(dtype)
    base = node.name or "gemm"
    w_value = add_initializer(graph, f"{base}_matmul_weight", weight)
    out = node.outputs[0]
    matmul = ir.node("MatMul", [node.inputs[0], w_value], name=f"{base}_matmul")
    nodes = [matmul]
    result = matmul.outputs[0]
    bias = const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    if bias is not None:
        b_value = add_initializer(graph, f"{base}_matmul_bias", (bias * node.attributes.get_float("beta", 1.0)).astype(dtype))
        add = ir.node("Add", [result, b_value], name=f"{base}_bias")
        nodes.append(add)
        result = add.outputs[0]
    graph.insert_before(node, nodes)
    result.shape, result.type = out.shape, out.type
    is_output = out.is_graph_output()
    out.replace_all_uses_with(result, replace_graph_outputs=True)
    name = out.name
    graph.remove(node, safe=True)
    if is_output or name:
        result.name = name


class RewriteGemm(NodeRewritePass):
    name = "rewrite-gemm"
    op_type = "Gemm"
    done_note = "rewrote {count} Gemm into MatMul+Add"

    def why_not(self, node: ir.Node) -> str | None:
        return _why_not(node)

    def rewrite(self, graph: ir.Graph, node: ir.Node) -> None:
        _rewrite(graph, node)
