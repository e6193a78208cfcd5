"""Shape inference: annotate every value with its dtype and shape (ONNX's inference, via onnx-ir)."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

from edgec.compiler.passes import EdgecPass

__all__ = ["InferShapes"]


class InferShapes(EdgecPass):
    name = "infer-shapes"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = sum(1 for n in model.graph for v in n.outputs if v.shape is None)
        result = ShapeInferencePass(data_prop=True)(model)
        after = sum(1 for n in result.model.graph for v in n.outputs if v.shape is None)
        self.note(f"{before - after} values gained a shape; {after} remain without one")
        return result
