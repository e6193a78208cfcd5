"""What a model asks of a device, from its ONNX graph: per-op FLOPs and bytes, weights, and the activation arena.

Shapes come from ONNX shape inference (unknown dimensions count as 1: batch-1 inference). Each node gets a
kernel class of the calibration suite (``conv1x1``, ``conv3x3``, ``dwconv``, ``gemm``, ``pool``, ``eltwise``),
``view`` (reshape-like: no data moved), ``free`` (folded or fused by the runtime, with the reason), or
``other`` (no measured kernel: the roofline prices it). Precision: a Conv/Gemm/MatMul fed by a
DequantizeLinear is ``int8`` (onnxruntime fuses the QDQ group into a QLinear kernel); ConvInteger/MatMulInteger
are ``int8-dynamic``. Bytes are counted at 4 bytes per element whatever the dtype, as the kernel tables are, so
the two compare like for like.

The activation arena is the peak, over the node order, of the bytes of tensors alive at once (produced and not
yet consumed for the last time); weights (initializers and Constant nodes) are counted apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["ModelStats", "NodeStats", "analyse", "pin_input_shapes"]

ELTWISE = {"Add", "Sub", "Mul", "Div", "Relu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu",
           "Neg", "Sqrt", "Exp", "Pow", "Max", "Min", "Erf", "Gelu", "Softmax", "BatchNormalization", "Abs",
           "Transpose", "Concat", "Slice", "Split", "Pad", "Resize", "Gather", "Cast", "Where", "Equal",
           "LayerNormalization", "InstanceNormalization", "Expand", "Tile", "PRelu", "Log", "Reciprocal",
           "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
VIEW = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Shape", "Dropout", "Constant", "Size"}
POOL = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "ReduceSum"}
CONV = {"Conv", "ConvInteger", "QLinearConv"}
GEMM = {"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"}
# Activations onnxruntime fuses into the Conv/Gemm before them (FusedConv, Gemm+activation).
FUSABLE = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid"}
QUANT_IO = {"QuantizeLinear", "DequantizeLinear"}
_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


@dataclass
class NodeStats:
    name: str
    op_type: str
    kind: str  # kernel class, "view", "free" or "other"
    precision: str
    flops: float
    bytes: float
    features: tuple  # nearest-shape matching compares: conv (min/max channels, out HW); gemm (M, K, N); else (elements,)
    shape: tuple = ()  # the node's main input shape
    note: str = ""


@dataclass
class ModelStats:
    nodes: list = field(default_factory=list)
    weights_bytes: int = 0
    arena_bytes: int = 0
    inputs: dict = field(default_factory=dict)

    def flops_by_kind(self) -> dict:
        total: dict = {}
        for node in self.nodes:
            total[node.kind] = total.get(node.kind, 0.0) + node.flops
        return total


def _shapes(model) -> tuple[dict, dict]:
    """name -> (dims, elem_type) for every typed value, and name -> bytes of weights."""
    import onnx
    from onnx import numpy_helper

    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # a graph shape inference cannot handle still gets estimated from what is declared
        inferred = model
    graph = inferred.graph
    shapes = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tensor.shape.dim)
            shapes[value.name] = (dims, tensor.elem_type)
    weights = {}
    for init in graph.initializer:
        shapes[init.name] = (tuple(init.dims), init.data_type)
        weights[init.name] = math.prod(init.dims) * _ITEMSIZE.get(init.data_type, 4)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    array = numpy_helper.to_array(attr.t)
                    shapes[node.output[0]] = (tuple(array.shape), attr.t.data_type)
                    weights[node.output[0]] = array.nbytes
    return shapes, weights


def _numel(shapes: dict, name: str) -> int:
    dims = shapes.get(name, ((),))[0] if name else ()
    return math.prod(dims) if dims else 1


def _conv(node, shapes, attrs, precision) -> tuple:
    x_name, w_name = (node.input[0], node.input[3]) if node.op_type == "QLinearConv" else node.input[:2]
    x = shapes.get(x_name, ((1, 1, 1, 1), 1))[0]
    w = shapes.get(w_name, ((1, 1, 1, 1), 1))[0]
    y = shapes.get(node.output[0], ((),))[0] or x
    group = int(attrs.get("group", 1))
    cout, cin_g = w[0], w[1] if len(w) > 1 else 1
    spatial = math.prod(w[2:]) if len(w) > 2 else 1
    out_hw = math.prod(y[2:]) if len(y) > 2 else 1
    cin = x[1] if len(x) > 1 else cin_g * group
    flops = 2.0 * y[0] * cout * out_hw * cin_g * spatial
    nbytes = 4.0 * (math.prod(x) + math.prod(y) + math.prod(w))
    kind = "dwconv" if group > 1 and group == cin else ("conv1x1" if spatial == 1 else "conv3x3")
    if group > 1 and group != cin:
        kind = "other"  # grouped convolution: no measured kernel
    # Channels as (narrow, wide): an expansion and its projection cost alike.
    return kind, precision, flops, nbytes, (min(cin, cout), max(cin, cout), out_hw), tuple(x)


def _gemm(node, shapes, attrs, precision) -> tuple:
    a_name, b_name = (node.input[0], node.input[3]) if node.op_type == "QLinearMatMul" else node.input[:2]
    a = shapes.get(a_name, ((1, 1), 1))[0] or (1, 1)
    b = shapes.get(b_name, ((1, 1), 1))[0] or (1, 1)
    if node.op_type == "Gemm" and attrs.get("transA"):
        a = (*a[:-2], a[-1], a[-2])
    k = a[-1]
    n = (b[-2] if node.op_type == "Gemm" and attrs.get("transB") else b[-1]) if len(b) > 1 else 1
    m = math.prod(a[:-1]) if len(a) > 1 else 1
    flops = 2.0 * m * k * n
    nbytes = 4.0 * (m * k + k * n + m * n)
    return "gemm", precision, flops, nbytes, (m, k, n), tuple(a)


def _precision(node, producers: dict, shapes: dict) -> str:
    if node.op_type in ("ConvInteger", "MatMulInteger"):
        return "int8-dynamic"
    if node.op_type.startswith("QLinear"):
        return "int8"
    first = producers.get(node.input[0]) if node.input else None
    if first is not None and first.op_type == "DequantizeLinear":
        return "int8"
    dtype = shapes.get(node.input[0], ((), 1))[1] if node.input else 1
    return "fp16" if dtype == 10 else "fp32"


def _classify(node, shapes, weights, producers, consumers) -> tuple:
    attrs = {a.name: (a.i if a.type == 2 else a.ints) for a in node.attribute if a.type in (2, 7)}
    precision = _precision(node, producers, shapes)
    out_elems = sum(_numel(shapes, o) for o in node.output)
    in_elems = sum(_numel(shapes, i) for i in node.input if i and i not in weights)
    default = (float(out_elems), 4.0 * (in_elems + out_elems), (max(in_elems, out_elems),),
               tuple(shapes.get(node.input[0], ((),))[0]) if node.input else ())
    if node.op_type in CONV:
        return (*_conv(node, shapes, attrs, precision), "")
    if node.op_type in GEMM:
        return (*_gemm(node, shapes, attrs, precision), "")
    if node.op_type == "Constant":
        return ("free", precision, 0.0, 0.0, default[2], default[3], "folded: constant")
    if node.op_type in VIEW:
        return ("view", precision, 0.0, 0.0, default[2], default[3], "no data moved")
    if node.op_type in QUANT_IO:
        if node.input[0] in weights:
            return ("free", precision, 0.0, 0.0, default[2], default[3], "folded: quantized weight")
        near = [producers.get(node.input[0]), *consumers.get(node.output[0], [])]
        if any(n is not None and n.op_type in CONV | GEMM | POOL | ELTWISE - QUANT_IO for n in near):
            return ("free", precision, 0.0, 0.0, default[2], default[3], "fused into the QLinear kernel")
    if node.op_type in FUSABLE or (node.op_type == "Add" and any(i in weights for i in node.input)):
        source = producers.get(node.input[0])
        if source is not None and source.op_type in CONV | GEMM and len(consumers.get(node.input[0], [])) == 1:
            return ("free", precision, 0.0, 0.0, default[2], default[3], f"fused into {source.op_type}")
    if node.op_type in POOL:
        kernel = math.prod(attrs.get("kernel_shape") or [1])
        flops = float(_numel(shapes, node.output[0]) * kernel) if "kernel_shape" in attrs else float(in_elems)
        return ("pool", precision, flops, default[1], default[2], default[3], "")
    if node.op_type in ELTWISE:
        return ("eltwise", precision, *default, "")
    return ("other", precision, *default, f"{node.op_type}: no measured kernel")


def _arena(graph, shapes, weights, kinds: list) -> int:
    """Peak bytes of activation buffers alive at once, in node order.

    A view (Reshape, ...) or a fused activation writes no buffer of its own: its output shares its input's
    buffer, which then lives until the last use of either name. Outputs computed from weights only (a weight's
    DequantizeLinear, a Constant) are weights, not activations.
    """
    weights = dict(weights)
    buffer: dict = {}  # tensor name -> the buffer (a tensor name) holding it
    for index, node in enumerate(graph.node):
        data_inputs = [i for i in node.input if i and i not in weights]
        for name in node.output:
            if not name:
                continue
            if not data_inputs:
                weights.setdefault(name, 0)
            elif kinds[index] in ("view", "free"):
                buffer[name] = buffer.get(data_inputs[0], data_inputs[0])
            else:
                buffer[name] = name
    last_use: dict = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            if name in buffer or name not in weights:
                last_use[buffer.get(name, name)] = index
    for output in graph.output:
        last_use[buffer.get(output.name, output.name)] = len(graph.node)

    def size(name: str) -> int:
        dims, dtype = shapes.get(name, ((), 1))
        return math.prod(dims) * _ITEMSIZE.get(dtype, 4) if dims else 0

    live = {i.name: size(i.name) for i in graph.input if i.name not in weights}
    peak = sum(live.values())
    for index, node in enumerate(graph.node):
        for name in node.output:
            if buffer.get(name) == name:
                live[name] = size(name)
        peak = max(peak, sum(live.values()))
        for name in [n for n in live if last_use.get(n, -1) <= index]:
            del live[name]
    return int(peak)


def pin_input_shapes(model, shapes: list) -> None:
    """Give the graph inputs (in order) the concrete ``shapes``, in place: e.g. the batch a bundle's reference
    inputs have, which is what ``edgec bench`` runs (a dynamic dimension otherwise counts as 1)."""
    weights = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    for value, shape in zip(inputs, shapes):
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            continue
        for dim, size in zip(dims, shape):
            if not dim.HasField("dim_value"):
                dim.dim_value = int(size)


def analyse(model) -> ModelStats:
    """The per-node table, weights and arena of an ``onnx.ModelProto``."""
    shapes, weights = _shapes(model)
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    stats = ModelStats(weights_bytes=int(sum(weights.values())),
                       inputs={i.name: shapes.get(i.name, ((), 1))[0] for i in graph.input if i.name not in weights})
    kinds = []
    for index, node in enumerate(graph.node):
        kind, precision, flops, nbytes, features, shape, note = _classify(node, shapes, weights, producers, consumers)
        name = node.name or f"{node.op_type}_{index}"
        kinds.append(kind)
        stats.nodes.append(NodeStats(name, node.op_type, kind, precision, flops, nbytes, tuple(features),
                                     tuple(shape), note))
    stats.arena_bytes = _arena(graph, shapes, weights, kinds)
    return stats
