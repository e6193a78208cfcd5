"""Rewrite Gemm with a constant weight into MatMul (+ Add), so weight-only int4 quantization reaches it.

onnxruntime's MatMulNBits quantizer handles MatMul only: ``nn.Linear`` exports as Gemm and would be skipped
silently ("Unsupported operator Gemm"). ``alpha`` and ``transB`` are folded into the new [K, N] weight, ``beta``
into the bias.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common

from edgec.compiler.passes import EdgecPass, add_initializer
from edgec.compiler.passes.quantize_common import const

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


class RewriteGemm(EdgecPass):
    name = "rewrite-gemm"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        rewritten, kept = 0, []
        for node in list(model.graph):
            if node.op_type != "Gemm" or node.domain not in ("", "ai.onnx"):
                continue
            reason = _why_not(node)
            if reason:
                kept.append(f"{node.name}: {reason}")
                continue
            _rewrite(model.graph, node)
            rewritten += 1
        self.note(f"rewrote {rewritten} Gemm into MatMul+Add")
        self.notes.extend(f"kept Gemm {item}" for item in kept)
        if rewritten:
            ir.passes.common.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, rewritten > 0)
