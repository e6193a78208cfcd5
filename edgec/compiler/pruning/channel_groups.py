"""Channel dependency groups: which output channels of which layers must be pruned together.

Walks the graph once in topological order and tracks, for every value with a channel axis (axis 1), which
*groups* its channels come from. A group starts at a prunable producer (a Conv with ``group=1``, or a Gemm/MatMul
with a constant weight) and flows through channel-wise ops (activations, pooling, BatchNormalization, Mul/Add by a
per-channel constant, depthwise Conv) to its consumers (a Conv, Gemm or MatMul that reads those channels, also
through Flatten/Reshape, where one channel is ``H*W`` consecutive features). Element-wise joins (Add, Sum, Mul of
two tracked tensors, as in residual connections) merge groups; Concat lays groups side by side at offsets.

Whatever the analysis cannot prove safe (a graph output, LRN mixing neighbouring channels, a Reshape/Transpose
shuffle, a grouped Conv, Split/Slice of channels, an unknown op) *blocks* every group it touches, with the reason,
so those filters are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

__all__ = ["ChannelGroup", "Edit", "GroupAnalysis", "analyse_groups", "const_array"]

# Ops whose output channel c depends only on input channel c (extra inputs, if any, are checked separately).
PASSTHROUGH = frozenset({
    "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus",
    "Softsign", "Gelu", "Erf", "Dropout", "Identity", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "LpPool", "Cast", "Neg", "Abs", "Sqrt", "Exp", "Mish", "Celu", "ThresholdedRelu",
    "Floor", "Ceil", "Round", "Reciprocal",
})
# Ops with per-channel constant parameters at these input positions (sliced along their only axis).
CHANNEL_PARAMS = {"BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2)}
ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "PRelu"})
REDUCE = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2"})


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The constant behind a value (an initializer or a Constant node's output), else None."""
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and "value" in producer.attributes:
        return producer.attributes["value"].as_tensor().numpy()
    return None


@dataclass
class Edit:
    """One change pruning a group makes: ``kind`` is out | param | depthwise | in | reshape.

    ``segments`` is the channel layout (group ids, in order) of the channels this edit indexes; ``spatial`` is
    how many consecutive features one channel occupies (``H*W`` after a Flatten, else 1).
    """

    kind: str
    node: ir.Node
    segments: tuple
    input_index: int = 1
    axis: int = 0
    spatial: int = 1


@dataclass
class ChannelGroup:
    """Channels that are pruned together: their producers, the edits pruning needs, and why not (if blocked)."""

    gid: int
    size: int
    producers: list = field(default_factory=list)
    blocked: list = field(default_factory=list)
    edits: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.producers[0].name if self.producers else f"group{self.gid}"


@dataclass
class _Channels:
    """The channel layout of one value: group ids side by side along axis 1; ``spatial`` after a Flatten."""

    segments: tuple
    spatial: int = 1
    flat: bool = False


class _Analysis:
    def __init__(self, graph: ir.Graph):
        self.graph = graph
        self.parent: dict[int, int] = {}
        self.groups: dict[int, ChannelGroup] = {}
        self.edits: list[Edit] = []
        self.tracked: dict[int, _Channels] = {}  # id(value) -> layout

    # -- union-find over group ids --
    def root(self, gid: int) -> int:
        while self.parent[gid] != gid:
            self.parent[gid] = self.parent[self.parent[gid]]
            gid = self.parent[gid]
        return gid

    def new_group(self, size: int, producer: ir.Node) -> int:
        gid = len(self.parent)
        self.parent[gid] = gid
        self.groups[gid] = ChannelGroup(gid, size, [producer])
        return gid

    def union(self, a: int, b: int) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            self.parent[rb] = ra
            self.groups[ra].producers += self.groups[rb].producers
            self.groups[ra].blocked += self.groups[rb].blocked

    def block(self, layout: _Channels | None, reason: str) -> None:
        if layout is None:
            return
        for gid in layout.segments:
            group = self.groups[self.root(gid)]
            if reason not in group.blocked:
                group.blocked.append(reason)

    def layout(self, value: ir.Value | None) -> _Channels | None:
        return None if value is None else self.tracked.get(id(value))

    def size(self, layout: _Channels) -> int:
        return sum(self.groups[self.root(g)].size for g in layout.segments)


def _rank(value: ir.Value) -> int | None:
    return len(value.shape) if value.shape is not None else None


def _dims(value: ir.Value) -> list | None:
    return list(value.shape) if value.shape is not None else None


def _conv_kind(node: ir.Node) -> str:
    weight = const_array(node.inputs[1])
    if weight is None:
        return "dynamic"
    group = node.attributes.get_int("group", 1)
    if group == 1:
        return "dense"
    if group == weight.shape[0] and weight.shape[1] == 1:
        return "depthwise"
    return "grouped"


def _visit_conv(an: _Analysis, node: ir.Node) -> None:
    layout = an.layout(node.inputs[0])
    kind = _conv_kind(node)
    if kind == "depthwise" and layout is not None and not layout.flat and an.size(layout) == node.inputs[1].shape[0]:
        an.edits.append(Edit("depthwise", node, layout.segments))
        an.tracked[id(node.outputs[0])] = _Channels(layout.segments)
        return
    if layout is not None:
        if kind == "dense" and not layout.flat:
            an.edits.append(Edit("in", node, layout.segments, 1, 1))
        elif kind == "depthwise":
            an.block(layout, f"depthwise Conv {node.name!r} has a channel multiplier")
        else:
            an.block(layout, f"Conv {node.name!r} is {kind} (group={node.attributes.get_int('group', 1)})")
    if kind == "dense" and (len(node.inputs) < 3 or node.inputs[2] is None or const_array(node.inputs[2]) is not None):
        gid = an.new_group(int(node.inputs[1].shape[0]), node)
        an.edits.append(Edit("out", node, (gid,)))
        an.tracked[id(node.outputs[0])] = _Channels((gid,))


def _linear_weight(node: ir.Node) -> tuple[np.ndarray | None, int, int]:
    """(constant weight, axis of its input features, axis of its output features) of a Gemm/MatMul."""
    weight = const_array(node.inputs[1])
    if weight is None or weight.ndim != 2:
        return None, 0, 1
    if node.op_type == "Gemm" and node.attributes.get_int("transB", 0):
        return weight, 1, 0
    return weight, 0, 1


def _visit_linear(an: _Analysis, node: ir.Node) -> None:
    layout = an.layout(node.inputs[0])
    weight, in_axis, out_axis = _linear_weight(node)
    usable = (weight is not None and _rank(node.inputs[0]) == 2 and
              not (node.op_type == "Gemm" and node.attributes.get_int("transA", 0)))
    if layout is not None:
        if usable and an.size(layout) * layout.spatial == weight.shape[in_axis]:
            an.edits.append(Edit("in", node, layout.segments, 1, in_axis, layout.spatial))
        else:
            an.block(layout, f"{node.op_type} {node.name!r} reads the channels in a way pruning cannot follow")
    bias = const_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    bias_ok = len(node.inputs) < 3 or node.inputs[2] is None or (bias is not None and bias.ndim <= 2)
    if usable and bias_ok:
        gid = an.new_group(int(weight.shape[out_axis]), node)
        an.edits.append(Edit("out", node, (gid,), 1, out_axis))
        an.tracked[id(node.outputs[0])] = _Channels((gid,))


def _param_axis(const: np.ndarray, out_rank: int) -> int | None:
    """Axis of a broadcast constant that lines up with channel axis 1 of a rank-``out_rank`` tensor."""
    axis = const.ndim - (out_rank - 1)
    return axis if 0 <= axis < const.ndim else None


def _visit_elementwise(an: _Analysis, node: ir.Node) -> None:
    inputs = [v for v in node.inputs if v is not None]
    layouts = [an.layout(v) for v in inputs]
    tracked = [lay for lay in layouts if lay is not None]
    out_rank = _rank(node.outputs[0])
    first = tracked[0]
    problem = None
    for value, lay in zip(inputs, layouts):
        if lay is not None:
            same = ([an.root(g) for g in lay.segments], lay.flat, lay.spatial) == (
                [an.root(g) for g in first.segments], first.flat, first.spatial)
            single = len(lay.segments) == len(first.segments) == 1 and not lay.flat and not first.flat
            if not same and single and an.size(lay) == an.size(first):
                an.union(lay.segments[0], first.segments[0])  # a residual join: both sides keep the same channels
            elif not same:
                problem = f"{node.op_type} {node.name!r} joins tensors with different channel layouts"
            continue
        const = const_array(value)
        if const is None:
            problem = f"{node.op_type} {node.name!r} mixes pruned channels with a computed tensor"
        elif first.flat or out_rank is None or _rank(value) is None:
            if const.size != 1:
                problem = f"{node.op_type} {node.name!r} has a constant pruning cannot slice"
        else:
            axis = _param_axis(const, out_rank)
            if axis is not None and const.shape[axis] != 1:
                an.edits.append(Edit("param", node, first.segments, node.inputs.index(value), axis))
    if problem:
        for lay in tracked:
            an.block(lay, problem)
        return
    an.tracked[id(node.outputs[0])] = _Channels(first.segments, first.spatial, first.flat)


def _visit_concat(an: _Analysis, node: ir.Node, layouts: list) -> None:
    axis = node.attributes.get_int("axis", 0)
    rank = _rank(node.outputs[0])
    if rank is not None and axis < 0:
        axis += rank
    if axis != 1 or any(lay is None or lay.flat for lay in layouts):
        for lay in layouts:
            an.block(lay, f"Concat {node.name!r} on axis {axis} with untracked or flattened inputs")
        return
    an.tracked[id(node.outputs[0])] = _Channels(tuple(g for lay in layouts for g in lay.segments))


def _reduce_axes(node: ir.Node) -> list | None:
    if "axes" in node.attributes:
        return list(node.attributes["axes"].as_ints())
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = const_array(node.inputs[1])
        return None if axes is None else [int(a) for a in axes.reshape(-1)]
    return None


def _visit_shape_change(an: _Analysis, node: ir.Node, layout: _Channels) -> bool:
    """Flatten/Reshape to (N, C*H*W), Squeeze/Reduce of spatial axes: True when the layout was followed."""
    dims = _dims(node.inputs[0])
    out = _dims(node.outputs[0])
    if dims is None or out is None or layout.flat:
        return False
    spatial = dims[2:]
    if not all(isinstance(d, int) for d in spatial):
        return False
    size = int(np.prod(spatial)) if spatial else 1
    op = node.op_type
    if op == "Flatten" and node.attributes.get_int("axis", 1) == 1:
        an.tracked[id(node.outputs[0])] = _Channels(layout.segments, size, flat=size > 1)
        return True
    if op == "Reshape" and len(out) == 2 and len(dims) >= 2:
        shape = const_array(node.inputs[1])
        if shape is not None and shape.size == 2 and int(shape[1]) in (-1, an.size(layout) * size):
            if int(shape[1]) != -1:
                an.edits.append(Edit("reshape", node, layout.segments, spatial=size))
            an.tracked[id(node.outputs[0])] = _Channels(layout.segments, size, flat=size > 1)
            return True
        return False
    if op == "Squeeze" or op in REDUCE:
        axes = _reduce_axes(node) if op in REDUCE else (
            [int(a) for a in const_array(node.inputs[1]).reshape(-1)] if len(node.inputs) > 1
            and const_array(node.inputs[1]) is not None else None)
        if axes is None:
            return False
        axes = [a + len(dims) if a < 0 else a for a in axes]
        if 0 in axes or 1 in axes:
            return False
        an.tracked[id(node.outputs[0])] = _Channels(layout.segments)
        return True
    return False


def _visit(an: _Analysis, node: ir.Node) -> None:
    op = node.op_type
    layouts = [an.layout(v) for v in node.inputs]
    first = layouts[0] if layouts else None
    if node.domain not in ("", "ai.onnx"):
        for lay in layouts:
            an.block(lay, f"custom op {node.domain}::{op} {node.name!r}")
        return
    if op == "Conv":
        _visit_conv(an, node)
    elif op in ("Gemm", "MatMul"):
        _visit_linear(an, node)
    elif first is None and not any(layouts):
        return
    elif op in PASSTHROUGH and not any(layouts[1:]):
        if op in ("MaxPool", "Dropout") and len(node.outputs) > 1 and node.outputs[1].uses():
            an.block(first, f"{op} {node.name!r} second output is used")
            return
        an.tracked[id(node.outputs[0])] = first
    elif op in CHANNEL_PARAMS and not any(layouts[1:]) and not first.flat:
        for index in CHANNEL_PARAMS[op]:
            if const_array(node.inputs[index]) is None:
                an.block(first, f"{op} {node.name!r} parameters are not constant")
                return
            an.edits.append(Edit("param", node, first.segments, index, 0))
        an.tracked[id(node.outputs[0])] = first
    elif op in ELEMENTWISE:
        _visit_elementwise(an, node)
    elif op == "Concat":
        _visit_concat(an, node, layouts)
    elif op in ("Flatten", "Reshape", "Squeeze") or op in REDUCE:
        if first is None or not _visit_shape_change(an, node, first):
            an.block(first, f"{op} {node.name!r} reshapes the channel axis")
    else:
        for lay in layouts:
            an.block(lay, f"{op} {node.name!r} is not channel-wise")


class GroupAnalysis:
    """The root groups of a graph (in producer order) and a map from any group id to its root group."""

    def __init__(self, an: _Analysis):
        self._an = an
        roots: dict[int, ChannelGroup] = {}
        for gid in an.groups:
            roots.setdefault(an.root(gid), an.groups[an.root(gid)])
        self.groups = list(roots.values())
        for edit in an.edits:
            for root in sorted({an.root(g) for g in edit.segments}):
                roots[root].edits.append(edit)

    def resolve(self, gid: int) -> ChannelGroup:
        return self._an.groups[self._an.root(gid)]


def analyse_groups(graph: ir.Graph) -> GroupAnalysis:
    """Channel groups of ``graph`` with the edits pruning each needs and the reasons some cannot be pruned.

    Shapes must be inferred first (Flatten/Reshape need the spatial size).
    """
    an = _Analysis(graph)
    for node in graph:  # onnx-ir keeps nodes in topological order
        _visit(an, node)
    for value in graph.outputs:
        an.block(an.layout(value), f"graph output {value.name!r} must keep its channels")
    return GroupAnalysis(an)
