"""ONNX example models built with onnx.helper: fast, deterministic, no framework needed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["onnx_mlp"]


def onnx_mlp(path: str | os.PathLike, width: int = 64, depth: int = 2, seed: int = 0) -> Path:
    """A float MLP (MatMul/Add/Relu, ``depth`` layers of ``width``) with input ``x`` [1, width], saved to ``path``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for k in range(depth):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{k}"), numpy_helper.from_array(np.zeros(width, np.float32), f"b{k}")]
        out = "y" if k == depth - 1 else f"h{k}"
        nodes += [helper.make_node("MatMul", [prev, f"w{k}"], [f"m{k}"]),
                  helper.make_node("Add", [f"m{k}", f"b{k}"], [f"a{k}"]),
                  helper.make_node("Relu", [f"a{k}"], [out])]
        prev = out
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path = Path(path)
    onnx.save(model, str(path))
    return path
