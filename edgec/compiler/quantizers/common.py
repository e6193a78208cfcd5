"""Helpers the quantization passes share: constant tensors, onnxruntime sessions, per-channel activation statistics.

Statistics are gathered by running the float model with the wanted intermediate tensors added as outputs, over
calibration samples streamed a batch at a time; only running sums, minima and maxima are kept.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from edgec import ir as edgec_ir
from edgec.compiler.passes import const, set_input_const

__all__ = ["ChannelStats", "batch_size", "channel_stats", "const", "make_session", "replace_const",
           "subgraph_names", "weighted_nodes"]

# Ops whose second input is a weight tensor quantized per output channel.
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")


def replace_const(graph: ir.Graph, node: ir.Node, index: int, array: np.ndarray, suffix: str) -> None:
    """Give ``node`` input ``index`` a new initializer holding ``array`` (the old one may be shared)."""
    set_input_const(graph, node, index, array, f"{node.name or node.op_type}_{suffix}")


def weighted_nodes(model: ir.Model) -> list[ir.Node]:
    """Nodes with a constant float weight input (Conv/Gemm/MatMul), in graph order."""
    found = []
    for node in model.graph:
        if node.op_type in WEIGHTED_OPS and node.domain in ("", "ai.onnx") and len(node.inputs) > 1:
            weight = const(node.inputs[1])
            if weight is not None and np.issubdtype(weight.dtype, np.floating):
                found.append(node)
    return found


def batch_size(model: ir.Model, default: int = 8) -> int:
    """Samples per run: the model's fixed batch when it has one, else ``default``."""
    dims = [v.shape[0] if v.shape is not None and len(v.shape) else None for v in model.graph.inputs]
    fixed = [d for d in dims if isinstance(d, int)]
    return fixed[0] if fixed else default


def make_session(proto: onnx.ModelProto, threads: int = 0, unfused: bool = False):
    """An onnxruntime CPU session. ``unfused``: no graph optimizations, so a QDQ model runs as written
    (DequantizeLinear -> float op -> QuantizeLinear): the exact arithmetic of the quantized model, whatever int8
    kernels this machine has (see ``proto_runner``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if unfused:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def proto_runner(proto: onnx.ModelProto, threads: int = 0, unfused: bool = False):
    """A runner (list of inputs in graph order -> list of outputs) for an ONNX proto.

    ``unfused`` measures a quantized model's own arithmetic rather than this machine's int8 kernels: fused into
    QLinearConv/MatMulInteger on an x86 CPU without VNNI, onnxruntime's u8s8 kernels (VPMADDUBSW) saturate their
    int16 pair sums, an error the target (VNNI, ARM dot product, or reduce_range) does not make.
    """
    session = make_session(proto, threads, unfused)
    names = [i.name for i in session.get_inputs()]
    return lambda inputs: session.run(None, dict(zip(names, inputs)))


class ChannelStats:
    """Per-channel (axis 1) minimum, maximum and mean of a tensor over the calibration samples."""

    def __init__(self):
        self.minimum = self.maximum = self.total = None
        self.count = 0

    def update(self, array: np.ndarray) -> None:
        array = np.asarray(array, np.float64)
        flat = np.moveaxis(array, 1, 0).reshape(array.shape[1], -1) if array.ndim > 1 else array.reshape(1, -1)
        low, high, total = flat.min(1), flat.max(1), flat.sum(1)
        if self.minimum is None:
            self.minimum, self.maximum, self.total = low, high, total
        else:
            self.minimum, self.maximum = np.minimum(self.minimum, low), np.maximum(self.maximum, high)
            self.total = self.total + total
        self.count += flat.shape[1]

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.count, 1)


def with_outputs(model: ir.Model, names: list[str]) -> onnx.ModelProto:
    """The model as a proto whose outputs also include the tensors ``names``."""
    proto = edgec_ir.to_proto(model)
    present = {o.name for o in proto.graph.output}
    for name in names:
        if name not in present:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
            present.add(name)
    return proto


def channel_stats(model: ir.Model, names: list[str], samples, limit: int = 64, threads: int = 0
                  ) -> dict[str, ChannelStats]:
    """Per-channel statistics of the tensors ``names`` over up to ``limit`` calibration samples."""
    if not names:
        return {}
    proto = with_outputs(model, names)
    session = make_session(proto, threads)
    inputs = [i.name for i in session.get_inputs()]
    stats = {name: ChannelStats() for name in names}
    for batch in samples.batches(batch_size(model), limit):
        values = session.run(names, dict(zip(inputs, batch)))
        for name, value in zip(names, values):
            stats[name].update(value)
    return stats


def subgraph_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name the subgraphs of ``graph``'s nodes use or make (recursively)."""
    names: set[str] = set()
    for node in graph.node:
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs):
                for inner in sub.node:
                    names.update(inner.input)
                    names.update(inner.output)
                names.update(o.name for o in sub.output)
                names |= subgraph_names(sub)
    return names


def compact_proto(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Shrink a quantized model's bookkeeping without touching its arithmetic.

    The quantizers add value_info, long derived tensor names (``<weight>_quantized_zero_point``...) and all-zero
    int32 zero points for biases; on a small model those cost as much as the weights. Compute nodes keep their
    names (the report refers to them); graph inputs and outputs keep theirs.
    """
    graph = proto.graph
    del graph.value_info[:]
    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and len(node.input) == 3 and node.input[0] in inits \
                and inits[node.input[0]].data_type == onnx.TensorProto.INT32 and node.input[2] in inits \
                and not np.any(onnx.numpy_helper.to_array(inits[node.input[2]])):
            del node.input[2]
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    # Subgraphs (If/Loop/Scan bodies) refer to outer tensors by name: those names stay.
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {""} | subgraph_names(graph)
    mapping: dict[str, str] = {}

    def short(name: str) -> str:
        if name in keep:
            return name
        return mapping.setdefault(name, f"t{len(mapping)}")

    for tensor in graph.initializer:
        tensor.name = short(tensor.name)
    for index, node in enumerate(graph.node):
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            node.name = f"q{index}"
    return proto
