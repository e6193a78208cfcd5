"""Which nodes static int8 leaves in float by the model's structure, before any accuracy is measured.

* **Recurrent ops** (LSTM, GRU, RNN): their gates run on a state that they carry from step to step and, in a
  streaming model, from call to call. onnxruntime's QDQ format has no int8 kernel for them, and rounding the state
  compounds over time (silero-vad: static int8 around its LSTM and state flips 16% of speech decisions). They stay
  float, as onnxruntime's own quantizer and TFLite leave them unless asked for dynamic LSTM weights.
* **The state path**: the nodes that carry a recurrent op's initial state from the graph inputs (gathers,
  squeezes...), and those that carry its final state onwards without passing a weighted layer (the ``stateN``
  output that the caller feeds back next call). A QDQ there would round a value that loops back.

``float_scope(model)`` returns {node name: reason} for both; ``Int8Quantizer`` excludes them from every model it
makes and the report lists them with the reason.
"""

from __future__ import annotations

import onnx_ir as ir

from edgec.compiler.quantizers.common import WEIGHTED_OPS

__all__ = ["RECURRENT_OPS", "activation_followers", "float_scope"]

# op type -> (indices of initial-state inputs, indices of final-state outputs)
RECURRENT_OPS = {"LSTM": ((5, 6), (1, 2)), "GRU": ((5,), (1,)), "RNN": ((5,), (1,))}
RECURRENT = ("recurrent op: it carries its state from step to step (and call to call); rounding that state "
             "compounds, and int8 QDQ has no kernel for it")
STATE = "carries a recurrent state {}: a QDQ here would round a value that loops back"


def _state_values(model: ir.Model) -> tuple[list[ir.Value], list[ir.Value]]:
    """(initial-state inputs, final-state outputs) of the recurrent ops."""
    into, out = [], []
    for node in model.graph:
        if node.op_type in RECURRENT_OPS and node.domain in ("", "ai.onnx"):
            ins, outs = RECURRENT_OPS[node.op_type]
            into += [node.inputs[i] for i in ins if i < len(node.inputs) and node.inputs[i] is not None]
            out += [node.outputs[i] for i in outs if i < len(node.outputs)]
    return into, out


# Nodes whose output is metadata (a shape, a size), not the data itself: the state path stops there.
METADATA_OPS = ("Shape", "Size")


def _subgraphs(node: ir.Node) -> list[ir.Graph]:
    found = []
    for attribute in node.attributes.values():
        if attribute.type == ir.AttributeType.GRAPH:
            found.append(attribute.value)
        elif attribute.type == ir.AttributeType.GRAPHS:
            found.extend(attribute.value)
    return found


def _uses(node: ir.Node) -> list[ir.Value]:
    """The values ``node`` reads: its inputs and, for If/Loop/Scan, whatever its bodies read (outer values are
    captured by name, not listed as inputs)."""
    values = [v for v in node.inputs if v is not None]
    for graph in _subgraphs(node):
        for inner in graph:
            values.extend(_uses(inner))
    return values


def _upstream(values: list[ir.Value], top: set[int]) -> list[ir.Node]:
    """Every top-level node that computes ``values``, back to graph inputs, constants, weighted layers and
    shape queries."""
    seen, stack, found = set(), list(values), []
    while stack:
        node = stack.pop().producer()
        if node is None or id(node) in seen or id(node) not in top or node.op_type in WEIGHTED_OPS:
            continue
        seen.add(id(node))
        found.append(node)
        if node.op_type not in METADATA_OPS:
            stack.extend(_uses(node))
    return found


def _downstream(values: list[ir.Value], users: dict[int, list[ir.Node]]) -> list[ir.Node]:
    """Every top-level node fed by ``values`` up to (not through) the next weighted layer."""
    seen, stack, found = set(), list(values), []
    while stack:
        for node in users.get(id(stack.pop()), []):
            if id(node) in seen or node.op_type in WEIGHTED_OPS:
                continue
            seen.add(id(node))
            found.append(node)
            stack.extend(node.outputs)
    return found


def float_scope(model: ir.Model) -> dict[str, str]:
    """Node name -> why static int8 leaves it in float (recurrent ops and their state paths)."""
    scope = {n.name: RECURRENT for n in model.graph if n.op_type in RECURRENT_OPS}
    if not scope:
        return scope
    into, out = _state_values(model)
    top = {id(n) for n in model.graph}
    users: dict[int, list[ir.Node]] = {}
    for node in model.graph:
        for value in _uses(node):
            users.setdefault(id(value), []).append(node)
    for node in _upstream(into, top):
        scope.setdefault(node.name, STATE.format("into a recurrent op"))
    for node in _downstream(out, users):
        scope.setdefault(node.name, STATE.format("out of a recurrent op"))
    return scope


# Weightless ops that only move or select values: a QDQ around them rounds nothing new (they share their
# producer's scale). Every other weightless op the quantizer takes (Add, Mul, Relu, Sigmoid, Softmax, pools...)
# computes new values on a new scale; the accuracy guard may return them to float, a whole op type at a time.
MOVEMENT_OPS = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Gather",
                          "GatherElements", "Split", "MaxPool", "Pad", "TopK", "Where", "CumSum"})
GROUP_PREFIX = "ops:"


def op_groups(model: ir.Model, op_types, skip) -> dict[str, list[str]]:
    """``"ops:Add"`` -> the names of the weightless nodes of that type that int8 would quantize (those of
    ``op_types`` that compute values, not in ``skip``): candidates the accuracy guard returns to float together."""
    groups: dict[str, list[str]] = {}
    for node in model.graph:
        if (node.op_type in op_types and node.op_type not in MOVEMENT_OPS and node.op_type not in WEIGHTED_OPS
                and node.domain in ("", "ai.onnx") and node.name not in skip):
            groups.setdefault(GROUP_PREFIX + node.op_type, []).append(node.name)
    return groups


def expand(names, groups: dict[str, list[str]]) -> set[str]:
    """Node names, with every op-type group in ``names`` replaced by its nodes."""
    found: set[str] = set()
    for name in names:
        found.update(groups.get(name, [name]))
    return found


# Activations a weighted layer's output range already bounds when it alone reads that output.
FOLLOWER_OPS = ("Relu", "Clip")


def activation_followers(model: ir.Model) -> dict[str, str]:
    """Weighted layer -> the Relu/Clip that alone reads its output (not a graph output): the pair is one layer to
    the accuracy guard. A Conv returned to float without its Clip would still feed a quantized Clip, whose input
    Q/DQ rounds the pre-activation output on the pre-activation range (EfficientNet-Lite2's stem in float changed
    nothing that way: output noise 2.81e-2 -> 2.92e-2)."""
    outputs = {id(v) for v in model.graph.outputs}
    followers = {}
    for node in model.graph:
        if node.op_type not in WEIGHTED_OPS or len(node.outputs) != 1 or id(node.outputs[0]) in outputs:
            continue
        users = [use.node for use in node.outputs[0].uses()]
        if len(users) == 1 and users[0].op_type in FOLLOWER_OPS and users[0].domain in ("", "ai.onnx"):
            followers[node.name] = users[0].name
    return followers
