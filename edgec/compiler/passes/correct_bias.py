"""Bias correction of quantized layers (Nagel et al. 2019, section 4.2).

Rounding a layer's weights ``W`` to ``W_q`` shifts the mean of its output by ``(W_q - W) E[x]``: a systematic
error that ReLUs and later layers amplify. With ``E[x]``, the per-channel mean of the layer's input over the
calibration data (from the float model), the float bias is pre-compensated by that amount, so that after the
quantizer rounds ``W`` exactly as simulated here, the expected output equals the float one. Runs on the float
graph right before the int8 quantizer; layers left in float are skipped.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common

from edgec.compiler.passes import EdgecPass, const
from edgec.compiler.quantizers.common import channel_stats, replace_const, weighted_nodes

__all__ = ["CorrectBias", "fake_quantize_weight", "input_means", "weight_axis"]


def weight_axis(node: ir.Node) -> int:
    """The output-channel axis onnxruntime quantizes a node's weight along."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if node.attributes.get_int("transB", 0) else 1
    return 1  # MatMul: [K, N]


def fake_quantize_weight(weight: np.ndarray, axis: int, per_channel: bool, weight_dtype: str,
                         reduce_range: bool) -> np.ndarray:
    """``weight`` rounded to symmetric int8/uint8 and back, the way onnxruntime's quantizer does it."""
    from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

    qtype = onnx.TensorProto.INT8 if weight_dtype == "int8" else onnx.TensorProto.UINT8
    qmin, qmax = get_qmin_qmax_for_qType(qtype, reduce_range=reduce_range, symmetric=True)
    moved = np.moveaxis(weight.astype(np.float32), axis, 0)
    rows = moved.reshape(moved.shape[0], -1) if per_channel else moved.reshape(1, -1)
    out = np.empty_like(rows)
    for k, row in enumerate(rows):
        zero, scale = compute_scale_zp(np.float32(row.min()), np.float32(row.max()), qmin, qmax, symmetric=True)
        scale, zero = float(scale), float(zero)
        if scale == 0:
            out[k] = row
            continue
        out[k] = (np.clip(np.round(row / scale) + zero, qmin, qmax) - zero) * scale
    return np.moveaxis(out.reshape(moved.shape), 0, axis)


def input_means(model: ir.Model, samples, limit: int = 64) -> dict[str, np.ndarray]:
    """Per-channel mean of every weighted node's input over the calibration samples."""
    names = sorted({n.inputs[0].name for n in weighted_nodes(model) if n.inputs[0] is not None})
    return {name: stats.mean for name, stats in channel_stats(model, names, samples, limit).items()}


def _output_shift(node: ir.Node, error: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    if node.op_type == "Conv":
        group = node.attributes.get_int("group", 1)
        if group == 1 and error.shape[1] == mean.shape[0]:
            return np.einsum("oi...,i->o...", error, mean).reshape(error.shape[0], -1).sum(1)
        if error.shape[1] == 1 and group == error.shape[0] == mean.shape[0]:
            return error.reshape(error.shape[0], -1).sum(1) * mean
        return None
    if node.op_type == "Gemm" and not node.attributes.get_int("transA", 0) and error.ndim == 2:
        return error @ mean if node.attributes.get_int("transB", 0) else mean @ error
    return None


class CorrectBias(EdgecPass):
    """Subtract the expected output shift of weight rounding from each quantized Conv/Gemm's bias.

    Args:
        means: per-channel input means by tensor name (``input_means``).
        skip: names of nodes that stay in float.
        per_channel, weight_dtype, reduce_range: how the int8 quantizer will round the weights.
    """

    name = "correct-bias"

    def __init__(self, means: dict[str, np.ndarray], skip=(), per_channel: bool = True, weight_dtype: str = "int8",
                 reduce_range: bool = False):
        super().__init__()
        self.means, self.skip = means, set(skip)
        self.per_channel, self.weight_dtype, self.reduce_range = per_channel, weight_dtype, reduce_range

    def settings(self) -> dict:
        return {"per_channel": self.per_channel, "weight_dtype": self.weight_dtype,
                "reduce_range": self.reduce_range}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        corrected, shifts = 0, []
        for node in weighted_nodes(model):
            mean = self.means.get(node.inputs[0].name)
            if node.name in self.skip or mean is None or node.op_type == "MatMul":
                continue
            weight = const(node.inputs[1])
            error = fake_quantize_weight(weight, weight_axis(node), self.per_channel, self.weight_dtype,
                                         self.reduce_range).astype(np.float64) - weight
            shift = _output_shift(node, error, mean)
            if shift is None:
                continue
            bias = const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
            base = np.zeros(shift.shape, np.float64) if bias is None else bias.astype(np.float64)
            if base.shape != shift.shape:
                continue
            replace_const(model.graph, node, 2, (base - shift).astype(weight.dtype), "bc_bias")
            shifts.append(float(np.max(np.abs(shift))))
            corrected += 1
        ir.passes.common.RemoveUnusedNodesPass()(model)
        largest = f", largest shift {max(shifts):.3g}" if shifts else ""
        self.note(f"corrected the bias of {corrected} quantized layers for the mean shift of weight rounding"
                  f"{largest}")
        return ir.passes.PassResult(model, corrected > 0)
