"""Selective TFLite int8: when full-integer int8 is over the accuracy budget, keep whole op types in float.

The converter's quantization debugger deny-lists op types (``DEPTHWISE_CONV_2D``, ``FULLY_CONNECTED``,
``CONV_2D``); LiteRT runs the float ops between QUANTIZE/DEQUANTIZE. Op types are tried cheapest first (by the
share of the model's weights they hold: what staying float costs in bytes), accumulating, each result measured
and judged by the same evidence as the ONNX guard; never every weighted op type (that is a float model).
Per-node deny-lists would need the TFLite tensor names of each ONNX node, which onnx2tf does not keep stable.
"""

from __future__ import annotations

import numpy as np

from edgec.compiler.passes import const
from edgec.compiler.quantizers.common import weighted_nodes

__all__ = ["float_op_steps", "op_type_weights"]


def _tflite_op(node) -> str:
    if node.op_type in ("Gemm", "MatMul"):
        return "FULLY_CONNECTED"
    weight = const(node.inputs[1])
    group = node.attributes.get("group")
    groups = group.as_int() if group is not None else 1
    return "DEPTHWISE_CONV_2D" if groups > 1 and weight.shape[1] == 1 else "CONV_2D"


def op_type_weights(float_model) -> dict[str, int]:
    """TFLite op type -> weight parameters the float IR holds in layers that become that op."""
    totals: dict[str, int] = {}
    for node in weighted_nodes(float_model):
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            kind = _tflite_op(node)
            totals[kind] = totals.get(kind, 0) + int(np.prod(const(node.inputs[1]).shape))
    return totals


def float_op_steps(float_model) -> list[tuple[tuple[str, ...], float]]:
    """Accumulating deny-lists, cheapest op type first, each with the share of weights it leaves in float."""
    weights = op_type_weights(float_model)
    total = max(sum(weights.values()), 1)
    order = sorted(weights, key=lambda k: (weights[k], k))[:-1]  # the biggest stays int8: else it is float
    steps, chosen, share = [], [], 0.0
    for kind in order:
        chosen.append(kind)
        share += weights[kind] / total
        steps.append((tuple(chosen), share))
    return steps
