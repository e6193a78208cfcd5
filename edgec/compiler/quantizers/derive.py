"""Models with some nodes back in float, derived from one fully quantized QDQ model instead of re-quantizing.

The accuracy guard measures dozens of variants of one model (each layer quantized alone, then prefixes of an
order in float). Running onnxruntime's quantizer for each costs about a second on a graph of 800 nodes (PP-OCRv4
rec: 64 runs were 60 of the guard's 100 s); the variants differ only in which Q/DQ pairs are in the way, so they
are derived from the full model in a few milliseconds:

* a node in float reads float values: an input that a DequantizeLinear feeds is read from the float tensor
  before its QuantizeLinear, unless that tensor comes out of a node still quantized (int8 kernels hand on int8
  values, as onnxruntime's quantizer also leaves them) or a quantized node also reads it (onnxruntime gives a
  tensor one Q/DQ pair that every reader shares, float readers too);
* its weights and biases are the float model's own (bias correction applies to quantized layers only);
* Q/DQ nodes nobody reads any more are dropped.

This is the arithmetic onnxruntime's ``quantize_static`` produces with the same ``nodes_to_exclude`` /
``nodes_to_quantize`` (tested). The final model is still made by onnxruntime's quantizer.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx
import onnx_ir as ir

from edgec import ir as edgec_ir
from edgec.compiler.quantizers.common import subgraph_names

__all__ = ["derive_variant"]

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def _float_inputs(model: ir.Model) -> tuple[dict[str, list[str]], dict[str, onnx.TensorProto]]:
    """(node name -> its input names, initializer name -> tensor) of the float model."""
    proto = edgec_ir.to_proto(model)
    return ({n.name: list(n.input) for n in proto.graph.node},
            {t.name: t for t in proto.graph.initializer})


class VariantMaker:
    """Derives variants of ``full`` (every quantizable node quantized) with ``quantized(name)`` deciding which
    nodes stay int8."""

    def __init__(self, full: onnx.ModelProto, float_model: ir.Model):
        self.full = full
        self.float_inputs, self.float_inits = _float_inputs(float_model)

    def derive(self, quantized: Callable[[str], bool]) -> onnx.ModelProto:
        proto = onnx.ModelProto()
        proto.CopyFrom(self.full)
        graph = proto.graph
        producer = {o: n for n in graph.node for o in n.output}
        inits = {t.name for t in graph.initializer}
        needed: set[str] = set()
        self._restored: set[str] = set()  # float nodes that read a restored weight or bias
        self._shared = {i for n in graph.node if n.op_type not in QDQ_OPS and quantized(n.name) for i in n.input}
        for node in graph.node:
            if node.op_type in QDQ_OPS or quantized(node.name):
                continue
            for index, name in enumerate(node.input):
                source = self._float_source(node, index, name, producer, inits, quantized)
                if source is not None:
                    node.input[index] = source
                    needed.add(source)
                    if source in self.float_inits:
                        self._restored.add(node.name)
        self._float_outputs(graph, producer, quantized)
        defined = {o for n in graph.node for o in n.output}
        for name in sorted(needed - inits):
            if name in self.float_inits:
                graph.initializer.append(self._float_init(name, defined, graph))
        _prune(graph)
        return proto

    def _float_init(self, name: str, defined: set[str], graph) -> onnx.TensorProto:
        """The float model's initializer ``name``; renamed (and its readers with it) when the quantized graph
        already defines that name (onnxruntime names a bias's DequantizeLinear output after the bias)."""
        tensor = onnx.TensorProto()
        tensor.CopyFrom(self.float_inits[name])
        if name in defined:
            tensor.name = f"{name}_float"
            for node in graph.node:
                if node.op_type not in QDQ_OPS and name in node.input and node.name in self._restored:
                    node.input[:] = [tensor.name if i == name else i for i in node.input]
        return tensor

    def _float_source(self, node, index: int, name: str, producer: dict, inits: set, quantized) -> str | None:
        """The float tensor ``node`` should read instead of the dequantized ``name``, or None to keep it."""
        dq = producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            return None
        if dq.input[0] in inits:  # a weight or bias: the float model's own
            original = self.float_inputs.get(node.name)
            return original[index] if original is not None and index < len(original) else None
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or name in self._shared:
            return None
        origin = producer.get(q.input[0])
        return None if origin is not None and quantized(origin.name) else q.input[0]

    @staticmethod
    def _float_outputs(graph, producer: dict, quantized) -> None:
        """A graph output dequantized from a float node's tensor: an Identity of the tensor."""
        for output in graph.output:
            dq = producer.get(output.name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear":
                continue
            origin = producer.get(q.input[0])
            if origin is None or not quantized(origin.name):
                dq.op_type = "Identity"
                dq.input[:] = [q.input[0]]
                dq.domain = ""


def _prune(graph) -> None:
    """Drop Q/DQ nodes whose outputs nothing reads (repeatedly: a Q whose DQ went)."""
    outputs = {o.name for o in graph.output} | subgraph_names(graph)  # If/Loop bodies read outer names
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        keep = [n for n in graph.node if any(o in read for o in n.output) or n.op_type not in QDQ_OPS]
        if len(keep) == len(graph.node):
            return
        del graph.node[:]
        graph.node.extend(keep)


def derive_variant(full: onnx.ModelProto, float_model: ir.Model, quantized: Callable[[str], bool]):
    """One variant of ``full`` (see ``VariantMaker``)."""
    return VariantMaker(full, float_model).derive(quantized)
