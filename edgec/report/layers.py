"""Size of a bundle's weights by layer, read from the model file itself (ONNX or TFLite).

Weights that reach a layer through a dequantize (QDQ ONNX) or a TFLite ``DEQUANTIZE`` count for that layer, so an
int8 layer shows as int8 with its int8 bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["layer_sizes"]

_PASS_THROUGH = {"DequantizeLinear", "Cast", "Reshape", "Transpose", "DEQUANTIZE"}
# TFLite ops whose constant operands (after the first) are shapes, permutations or axes, not weights.
_SHAPE_OPS = {"RESHAPE", "TRANSPOSE", "PAD", "PADV2", "STRIDED_SLICE", "SLICE", "MEAN", "SUM", "GATHER",
              "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "CONCATENATION", "SPLIT", "EXPAND_DIMS"}


def layer_sizes(model_path: str | Path, fmt: str) -> list[dict]:
    """One record per layer holding weights: layer, op, weight dtypes, parameters, bytes; largest first.

    Returns [] for a format it cannot read.
    """
    records = _onnx_layers(Path(model_path)) if fmt == "onnx" else _tflite_layers(Path(model_path)) \
        if fmt == "tflite" else []
    return sorted(records, key=lambda r: (-r["bytes"], r["layer"]))


def _add(layers: dict, key: str, op: str, dtype: str, count: int, nbytes: int) -> None:
    entry = layers.setdefault(key, {"layer": key, "op": op, "dtypes": [], "parameters": 0, "bytes": 0})
    if dtype not in entry["dtypes"]:
        entry["dtypes"].append(dtype)
    entry["parameters"] += count
    entry["bytes"] += nbytes


def _onnx_layers(path: Path) -> list[dict]:
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    layers: dict = {}
    for init in graph.initializer:
        count = int(np.prod(init.dims)) if init.dims else 1
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type))
        node = _final_consumer(init.name, consumers)
        if node is None:
            continue
        nbytes = len(init.raw_data) if init.raw_data else count * dtype.itemsize
        _add(layers, node.name or f"{node.op_type}:{node.output[0]}", node.op_type, dtype.name, count, nbytes)
    return list(layers.values())


def _final_consumer(name: str, consumers: dict):
    """The first consumer of ``name`` that is not a dequantize/cast/reshape (one chain, a few hops at most)."""
    for _ in range(4):
        users = consumers.get(name) or []
        if not users:
            return None
        node = users[0]
        if node.op_type not in _PASS_THROUGH or not node.output:
            return node
        if node.op_type != "DequantizeLinear" and node.input[0] != name:
            return None  # a shape or permutation operand, not a weight
        name = node.output[0]
    return None


def _tflite_layers(path: Path) -> list[dict]:
    try:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path))
        ops = interpreter._get_ops_details()  # private but stable since TF 2.5; guarded: a failure shows nothing
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    except Exception:  # an unreadable file leaves the breakdown out; the report still renders
        return []
    produced = {o for op in ops for o in op["outputs"]}
    inputs = {d["index"] for d in interpreter.get_input_details()}
    by_input: dict[int, list] = {}
    for op in ops:
        for i in op["inputs"]:
            by_input.setdefault(i, []).append(op)
    layers: dict = {}
    for index, tensor in tensors.items():
        if index in produced or index in inputs or index not in by_input:
            continue
        op = by_input[index][0]
        if op["op_name"] == "DEQUANTIZE" and by_input.get(op["outputs"][0]):
            op = by_input[op["outputs"][0]][0]
        if op["op_name"] in _SHAPE_OPS and list(op["inputs"][:1]) != [index]:
            continue
        count = int(np.prod(tensor["shape"])) if len(tensor["shape"]) else 1
        dtype = np.dtype(tensor["dtype"])
        name = _short(tensors[op["outputs"][0]]["name"]) if op["outputs"] else op["op_name"]
        _add(layers, name, op["op_name"], dtype.name, count, count * dtype.itemsize)
    return list(layers.values())


def _short(name: str) -> str:
    """A fused TFLite tensor name ("a/Relu;a/Add;a/conv;Const_3") as its most telling part ("a/conv")."""
    parts = [p for p in name.split(";") if p and not p.startswith("Const")]
    return parts[-1] if parts else name
