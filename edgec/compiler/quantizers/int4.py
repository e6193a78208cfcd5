"""INT4 weight-only quantization: MatMul weights to block-wise int4 (onnxruntime's MatMulNBits).

Run ``rewrite_gemm`` first so ``nn.Linear`` layers (exported as Gemm) are reached. Block size and accuracy level
come from the profile (``accuracy_level=4`` computes in int8, without it MatMulNBits takes a slow path).
Activations stay float; nodes the accuracy guard returns to float are excluded.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from edgec import ir as edgec_ir
from edgec.compiler.passes import const
from edgec.errors import CompileError

__all__ = ["Int4Quantizer", "eligible_matmuls"]


def eligible_matmuls(model: ir.Model, block_size: int) -> list[ir.Node]:
    """MatMul nodes with a constant float [K, N] weight of at least one block."""
    found = []
    for node in model.graph:
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
            continue
        weight = const(node.inputs[1])
        if weight is not None and weight.ndim == 2 and np.issubdtype(weight.dtype, np.floating) \
                and weight.shape[0] >= block_size:
            found.append(node)
    return found


class Int4Quantizer:
    """Produces MatMulNBits models with any set of MatMul nodes left in float.

    Args:
        model: the float IR with Gemm already rewritten to MatMul+Add.
        spec: the profile's QuantizationSpec (int4_block_size, int4_accuracy_level, symmetric_weights).
    """

    def __init__(self, model: ir.Model, spec):
        self.model, self.spec = model, spec
        self.proto = edgec_ir.to_proto(model)
        self.candidates = [n.name for n in eligible_matmuls(model, spec.int4_block_size)]

    def settings(self) -> dict:
        return {"format": "MatMulNBits", "bits": 4, "block_size": self.spec.int4_block_size,
                "accuracy_level": self.spec.int4_accuracy_level, "symmetric": self.spec.symmetric_weights}

    def quantize(self, exclude=(), only=None) -> onnx.ModelProto:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        skip = set(exclude) if only is None else set(self.candidates) - set(only)
        # MatMul weights shorter than one block (K < block size) are skipped too: nothing to gain there.
        skip |= {n.name for n in proto.graph.node if n.op_type == "MatMul" and n.name not in self.candidates}
        try:
            quantizer = MatMulNBitsQuantizer(proto, bits=4, block_size=self.spec.int4_block_size,
                                             is_symmetric=self.spec.symmetric_weights,
                                             accuracy_level=self.spec.int4_accuracy_level,
                                             nodes_to_exclude=sorted(skip), op_types_to_quantize=("MatMul",))
            quantizer.process()
        except Exception as exc:  # never let the quantizer's own crash become the user's traceback
            raise CompileError(f"onnxruntime int4 quantization failed: {type(exc).__name__}: {exc}") from exc
        return quantizer.model.model


def int4_nodes(proto: onnx.ModelProto) -> dict[str, str]:
    """MatMulNBits node name -> the MatMul it replaced (onnxruntime keeps the name with a suffix)."""
    return {n.name: n.name.removesuffix("_Q4") for n in proto.graph.node if n.op_type == "MatMulNBits"}
