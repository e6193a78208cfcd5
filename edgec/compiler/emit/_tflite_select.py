"""Selective TFLite int8: single ops kept in float, chosen by the same accuracy guard as ONNX int8.

The converter calibrates the float model once (``_tflite_convert.calibrate``); every mixed model is then a
re-quantization of that calibrated model with a node deny-list (``_tflite_convert.quantize_calibrated``): about
half a second for EfficientNet-Lite2, where its calibration takes ~40 s. That makes per-op choices affordable, so
the TFLite path runs ``stages.quantize_guard.run_guard`` like the ONNX path: each weighted op's sensitivity (output
noise with that op alone quantized), its cost in float from its weights and MACs (``quantize_cost``), cheap float
layers kept whatever the budget (``quantize_select``), then the shortest prefix by noise removed per cost that
meets the budget. TFLite fuses an op's Relu/Relu6 into it, so a sensitivity needs no activation group.

Ops are named by their output tensor in the calibrated model (what the converter's deny-list takes) and shown as
``CONV_2D#0`` (type and position among the model's ops).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgec.compiler.emit import _tflite_convert as tfl

__all__ = ["Requantizer", "TFLiteOp"]

# op type -> axis of the filter holding the output channels (filters: OHWI, 1HWO, OI)
WEIGHTED_OPS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}
# Weightless ops that only move or select values: int8 gives their output their input's scale, nothing rounds
# anew. Every other weightless op (ADD, MUL, LOGISTIC, CONCATENATION, pools...) computes on a new scale: the guard
# may keep a whole op type float (``ops:LOGISTIC``), as the ONNX path's op-type groups.
MOVEMENT_OPS = frozenset({"RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "STRIDED_SLICE", "SLICE", "GATHER",
                          "SPLIT", "SPLIT_V", "PAD", "PADV2", "MAX_POOL_2D", "QUANTIZE", "DEQUANTIZE", "PACK",
                          "UNPACK", "SHAPE"})
GROUP_PREFIX = "ops:"


@dataclass
class TFLiteOp:
    name: str | list[str]  # output tensor name (a group's: its members'): what the deny-list takes
    label: str  # ``CONV_2D#0``
    op: str
    params: int
    macs: int


def _ops(content: bytes) -> tuple[list[str], list[TFLiteOp], dict[str, TFLiteOp]]:
    """(output tensor name of every op, the weighted ops with their figures, op-type groups of the weightless ops
    that compute: ``ops:LOGISTIC`` -> a TFLiteOp whose ``name`` lists its members' tensors, ``macs`` its output
    elements per sample) of a TFLite model."""
    ops, tensors = tfl.op_table(content)
    names, weighted, groups = [], [], {}
    for position, op in enumerate(ops):
        outputs = [i for i in op["outputs"] if i >= 0]
        if not outputs:
            continue
        name = tensors[outputs[0]]["name"]
        names.append(name)
        inputs = [i for i in op["inputs"] if i >= 0]
        if op["op_name"] not in WEIGHTED_OPS and op["op_name"] not in MOVEMENT_OPS:
            label = GROUP_PREFIX + op["op_name"]
            group = groups.setdefault(label, TFLiteOp([], label, op["op_name"], 0, 0))
            group.name.append(name)
            group.macs += int(np.prod([int(d) for d in tensors[outputs[0]]["shape"][1:]]))
            continue
        if op["op_name"] not in WEIGHTED_OPS or len(inputs) < 2:
            continue
        weight = [int(d) for d in tensors[inputs[1]]["shape"]]
        out = [int(d) for d in tensors[outputs[0]]["shape"]]
        params = int(np.prod(weight))
        channels = max(weight[WEIGHTED_OPS[op["op_name"]]], 1)
        macs = int(np.prod(out[1:])) * params // channels
        weighted.append(TFLiteOp(name, f"{op['op_name']}#{position}", op["op_name"], params, macs))
    return names, weighted, groups


class Requantizer:
    """One calibrated TFLite model, quantized to int8 with any set of its ops left in float.

    Ops are named by label: a weighted op by type and position (``CONV_2D#0``), every weightless op of a type
    that computes values as one group (``ops:LOGISTIC``). ``quantize(exclude=labels)`` keeps those ops float;
    ``quantize(only=labels)`` quantizes those alone (every other op float): the interface
    ``quantize_guard.run_guard`` drives.
    """

    def __init__(self, calibrated: bytes, io_dtype: str):
        self.calibrated, self.io_dtype = calibrated, io_dtype
        self.nodes, self.weighted, self.groups = _ops(calibrated)
        self.names = {op.label: [op.name] for op in self.weighted}
        self.names.update({label: group.name for label, group in self.groups.items()})

    def _tensors(self, labels) -> set[str]:
        return {name for label in labels for name in self.names[label]}

    def quantize(self, exclude=(), only=None) -> bytes:
        if only is not None:
            keep = self._tensors(only)
            denied = [name for name in self.nodes if name not in keep]
        else:
            denied = sorted(self._tensors(exclude))
        return tfl.quantize_calibrated(self.calibrated, self.io_dtype, denied)

    def figures(self) -> dict[str, tuple[int, int]]:
        """Op label or group -> (MACs per sample, weight parameters), for ``quantize_cost.costs_from_figures``; a
        group does about one operation per output element (the ONNX path's op-type groups count the same)."""
        return {op.label: (op.macs, op.params) for op in [*self.weighted, *self.groups.values()]}
