"""Unstructured magnitude pruning: zero the smallest weights of every large Conv/Gemm/MatMul weight tensor.

Zeros do not make dense kernels faster; they make the model file compress well (deflate), for devices whose
storage or download link is the limit. Each tensor is thresholded on its own (per-layer magnitude pruning), so no
layer is emptied by a global threshold dominated by another layer's scale.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgec.compiler.passes import EdgecPass
from edgec.compiler.pruning.channel_groups import const_array
from edgec.compiler.pruning.reconstruct import set_const

__all__ = ["SparsifyWeights"]

# Tensors smaller than this (depthwise kernels, tiny heads) hold little storage and much accuracy.
MIN_ELEMENTS = 256


class SparsifyWeights(EdgecPass):
    """Zero the fraction ``sparsity`` of smallest-magnitude weights in each large weight tensor."""

    name = "sparsify-weights"

    def __init__(self, sparsity: float):
        super().__init__()
        self.sparsity = sparsity
        self.zeroed = 0
        self.total = 0

    def settings(self) -> dict:
        return {"sparsity": self.sparsity, "min_elements": MIN_ELEMENTS}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        done: dict[int, ir.Value] = {}
        for node in model.graph:
            if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.inputs) < 2:
                continue
            weight = const_array(node.inputs[1])
            if weight is None or weight.size < MIN_ELEMENTS or not np.issubdtype(weight.dtype, np.floating):
                continue
            if id(node.inputs[1]) in done:  # a shared weight is sparsified once
                node.replace_input_with(1, done[id(node.inputs[1])])
                continue
            old = node.inputs[1]
            count = int(self.sparsity * weight.size)
            if count == 0:
                continue
            threshold_index = np.argpartition(np.abs(weight).reshape(-1), count - 1)[:count]
            sparse = weight.reshape(-1).copy()
            sparse[threshold_index] = 0
            set_const(model.graph, node, 1, sparse.reshape(weight.shape), "sparse")
            done[id(old)] = node.inputs[1]
            self.zeroed += count
            self.total += weight.size
        self.note(f"zeroed {self.zeroed} of {self.total} weights in large tensors "
                  f"({100.0 * self.zeroed / max(self.total, 1):.1f}%)")
        return ir.passes.PassResult(model, self.zeroed > 0)
