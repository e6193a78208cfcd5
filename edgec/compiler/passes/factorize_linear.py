"""Low-rank factorisation of large Gemm/MatMul weights by truncated SVD.

``W (in x out) ~= A (in x r) @ B (r x out)`` with ``A = U_r S_r`` and ``B = V_r^T``; ``r`` is the smallest rank
keeping the fraction ``energy`` of the squared singular values. The layer becomes ``MatMul(x, A)`` followed by
the original op with ``B``, which is only done when it saves at least ``1 - budget`` of the weights (otherwise
two matmuls cost more than one). Convolutions are left alone.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgec.compiler.passes import EdgecPass
from edgec.compiler.pruning.channel_groups import const_array
from edgec.compiler.pruning.reconstruct import set_const

__all__ = ["FactorizeLinear", "rank_for_energy"]

MIN_DIM = 64  # smaller matrices gain nothing worth a second matmul


def rank_for_energy(singular: np.ndarray, energy: float) -> int:
    """Smallest rank whose singular values keep ``energy`` of the total squared sum."""
    squares = singular.astype(np.float64) ** 2
    cumulative = np.cumsum(squares) / max(float(squares.sum()), 1e-30)
    return int(min(len(singular), np.searchsorted(cumulative, energy - 1e-12) + 1))


def _weight(node: ir.Node) -> tuple[np.ndarray | None, bool]:
    """The weight as (in x out) and whether it is stored transposed (Gemm transB=1)."""
    weight = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if weight is None or weight.ndim != 2 or not np.issubdtype(weight.dtype, np.floating):
        return None, False
    if node.op_type == "Gemm":
        if node.attributes.get_int("transA", 0):
            return None, False
        transposed = bool(node.attributes.get_int("transB", 0))
        return (weight.T if transposed else weight), transposed
    return weight, False


class FactorizeLinear(EdgecPass):
    """Split large Gemm/MatMul weights into two low-rank factors (retained energy ``energy``)."""

    name = "factorize-linear"

    def __init__(self, energy: float, budget: float = 0.7):
        super().__init__()
        self.energy, self.budget = energy, budget
        self.saved = 0

    def settings(self) -> dict:
        return {"energy": self.energy, "max_param_fraction": self.budget, "min_dim": MIN_DIM}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = 0
        for node in list(model.graph):
            if node.op_type not in ("Gemm", "MatMul") or node.domain not in ("", "ai.onnx"):
                continue
            weight, transposed = _weight(node)
            if weight is None or min(weight.shape) < MIN_DIM:
                continue
            u, s, vt = np.linalg.svd(weight.astype(np.float64), full_matrices=False)
            rank = rank_for_energy(s, self.energy)
            params = rank * sum(weight.shape)
            if params > self.budget * weight.size:
                self.note(f"{node.name}: kept ({weight.shape[0]}x{weight.shape[1]} needs rank {rank} for "
                          f"{self.energy:g} energy; saves too little)")
                continue
            self._split(model.graph, node, (u[:, :rank] * s[:rank]).astype(weight.dtype),
                        vt[:rank].astype(weight.dtype), transposed)
            self.saved += weight.size - params
            changed += 1
            self.note(f"{node.name}: {weight.shape[0]}x{weight.shape[1]} -> rank {rank} "
                      f"({params} of {weight.size} weights)")
        return ir.passes.PassResult(model, changed > 0)

    def _split(self, graph: ir.Graph, node: ir.Node, first: np.ndarray, second: np.ndarray,
               transposed: bool) -> None:
        hidden = ir.Value(name=f"{node.name or 'linear'}_lowrank")
        a_node = ir.Node("", "MatMul", inputs=[node.inputs[0], None], outputs=[hidden],
                         name=f"{node.name or 'linear'}_lowrank")
        graph.insert_before(node, a_node)
        set_const(graph, a_node, 1, first, "lowrank_a")
        node.replace_input_with(0, hidden)
        set_const(graph, node, 1, second.T if transposed else second, "lowrank_b")
