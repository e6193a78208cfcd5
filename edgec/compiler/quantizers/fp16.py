"""fp16 conversion: weights and arithmetic in float16, inputs and outputs kept float32.

Only for targets whose profile says the device has fp16 arithmetic (``quantization.fp16_arithmetic``): elsewhere
the runtime converts back to float32 around every op and the model only gets slower. Nodes the accuracy guard
returns to float32 are blocked from conversion.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir

from edgec import ir as edgec_ir
from edgec.compiler.quantizers.common import weighted_nodes
from edgec.errors import CompileError

__all__ = ["Fp16Converter"]


class Fp16Converter:
    """Produces fp16 models with any set of nodes left in float32."""

    def __init__(self, model: ir.Model):
        self.proto = edgec_ir.to_proto(model)
        self.candidates = [n.name for n in weighted_nodes(model)]

    def settings(self) -> dict:
        return {"format": "float16", "keep_io_types": True}

    def quantize(self, exclude=(), only=None) -> onnx.ModelProto:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        block = set(exclude) if only is None else {n.name for n in self.proto.graph.node} - set(only)
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        try:
            return convert_float_to_float16(proto, keep_io_types=True, node_block_list=sorted(block) or None,
                                            disable_shape_infer=True)
        except Exception as exc:  # the converter's own errors: name the step
            raise CompileError(f"fp16 conversion failed: {type(exc).__name__}: {exc}") from exc
