"""An ONNX graph run by torch, its layer weights trainable, written back to the graph by initializer name.

Recovery needs gradients through the pruned graph. The graphs it sees are the ones pruning can edit (Conv, Gemm,
MatMul and the channel-wise ops between them), so a small interpreter over ``torch.nn.functional`` covers them
and keeps a one-to-one map from every trainable tensor to its initializer (a converter such as onnx2torch folds
weights into its own modules, and it imports torchvision, whose only wheel here does not load beside torch CPU).
An op outside the table raises ``UnsupportedGraph``; recovery then leaves the model as pruning made it.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["TorchGraph", "UnsupportedGraph"]

TRAINABLE = {"Conv": (1, 2), "Gemm": (1, 2), "MatMul": (1,)}


class UnsupportedGraph(Exception):
    """The graph holds an op (or an attribute form) the interpreter does not run."""


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _key(name: str) -> str:
    return "p_" + re.sub(r"\W", "_", name)


def _conv(F, x, w, b, a):
    rank = w.dim() - 2
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise UnsupportedGraph("Conv with auto_pad SAME (simplify the graph first)")
    pads = list(a.get("pads", [0] * 2 * rank))
    strides, dilations = a.get("strides", [1] * rank), a.get("dilations", [1] * rank)
    if pads[:rank] != pads[rank:]:
        torch_pads = [p for axis in reversed(range(rank)) for p in (pads[axis], pads[axis + rank])]
        x, pads = F.pad(x, torch_pads), [0] * 2 * rank
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    return conv(x, w, b, strides, pads[:rank], dilations, a.get("group", 1))


def _pool(F, x, a, kind):
    kernel = a["kernel_shape"]
    rank = len(kernel)
    pads = list(a.get("pads", [0] * 2 * rank))
    if pads[:rank] != pads[rank:] or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise UnsupportedGraph(f"{kind} with asymmetric or automatic padding")
    strides = a.get("strides", [1] * rank)
    ceil = bool(a.get("ceil_mode", 0))
    if kind == "MaxPool":
        pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[rank]
        return pool(x, kernel, strides, pads[:rank], a.get("dilations", [1] * rank), ceil)
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank]
    return pool(x, kernel, strides, pads[:rank], ceil, bool(a.get("count_include_pad", 0)))


def _gemm(torch, a_, b_, c_, at):
    a_ = a_.t() if at.get("transA", 0) else a_
    b_ = b_.t() if at.get("transB", 0) else b_
    out = at.get("alpha", 1.0) * (a_ @ b_)
    return out if c_ is None else out + at.get("beta", 1.0) * c_


def _axes(args, a, index=1):
    if "axes" in a:
        return list(a["axes"])
    if len(args) > index and args[index] is not None:
        return [int(v) for v in args[index].reshape(-1).tolist()]
    return None


def _reshape(x, shape):
    dims = [int(d) for d in shape.tolist()]
    dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _reduce(x, args, a, how):
    axes = _axes(args, a) or list(range(x.dim()))
    return how(x, dim=axes, keepdim=bool(a.get("keepdims", 1)))


def _ops(torch, F) -> dict:
    def clip(x, lo=None, hi=None, a=None):
        lo = a.get("min") if lo is None else lo
        hi = a.get("max") if hi is None else hi
        return torch.clamp(x, lo, hi)

    return {
        "Conv": lambda a, x, w, b=None: _conv(F, x, w, b, a),
        "Gemm": lambda a, x, w, c=None: _gemm(torch, x, w, c, a),
        "MatMul": lambda a, x, w: x @ w,
        "Relu": lambda a, x: F.relu(x),
        "Clip": lambda a, x, lo=None, hi=None: clip(x, lo, hi, a),
        "LeakyRelu": lambda a, x: F.leaky_relu(x, a.get("alpha", 0.01)),
        "Sigmoid": lambda a, x: torch.sigmoid(x),
        "Tanh": lambda a, x: torch.tanh(x),
        "HardSigmoid": lambda a, x: torch.clamp(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0, 1),
        "HardSwish": lambda a, x: F.hardswish(x),
        "Add": lambda a, x, y: x + y, "Sub": lambda a, x, y: x - y,
        "Mul": lambda a, x, y: x * y, "Div": lambda a, x, y: x / y,
        "Identity": lambda a, x: x, "Dropout": lambda a, x, *rest: x,
        "MaxPool": lambda a, x: _pool(F, x, a, "MaxPool"),
        "AveragePool": lambda a, x: _pool(F, x, a, "AveragePool"),
        "GlobalAveragePool": lambda a, x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
        "GlobalMaxPool": lambda a, x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True),
        "ReduceMean": lambda a, x, *r: _reduce(x, (x, *r), a, torch.mean),
        "ReduceSum": lambda a, x, *r: _reduce(x, (x, *r), a, torch.sum),
        "Flatten": lambda a, x: x.flatten(a.get("axis", 1)) if a.get("axis", 1) else x.reshape(1, -1),
        "Reshape": lambda a, x, s: _reshape(x, s),
        "Squeeze": lambda a, x, *r: x.squeeze(tuple(_axes((x, *r), a) or [i for i, d in enumerate(x.shape)
                                                                           if d == 1])),
        "Unsqueeze": lambda a, x, *r: _unsqueeze(x, _axes((x, *r), a)),
        "Concat": lambda a, *xs: torch.cat(xs, dim=a["axis"]),
        "Transpose": lambda a, x: x.permute(*a.get("perm", list(reversed(range(x.dim()))))),
        "Softmax": lambda a, x: torch.softmax(x, dim=a.get("axis", -1)),
        "BatchNormalization": lambda a, x, s, b, m, v: F.batch_norm(x, m, v, s, b, False, 0.0,
                                                                     a.get("epsilon", 1e-5)),
    }


def _unsqueeze(x, axes):
    for axis in sorted(a + x.dim() + 1 if a < 0 else a for a in axes):
        x = x.unsqueeze(axis)
    return x


class TorchGraph:
    """Runs an ONNX ``ModelProto`` with torch; Conv/Gemm/MatMul weights and biases are ``parameters``."""

    def __init__(self, proto: onnx.ModelProto, trainable: bool = True):
        import torch
        import torch.nn.functional as F

        self.torch, self.table = torch, _ops(torch, F)
        graph = proto.graph
        self.inputs = [v.name for v in graph.input if v.name not in {i.name for i in graph.initializer}]
        self.outputs = [v.name for v in graph.output]
        self.nodes = list(graph.node)
        self.attrs = [_attrs(node) for node in self.nodes]
        for node in self.nodes:
            if node.domain not in ("", "ai.onnx") or node.op_type not in self.table:
                raise UnsupportedGraph(f"{node.op_type} {node.name!r} (recovery runs {len(self.table)} ops)")
        learn = {node.input[i] for node in self.nodes for i in TRAINABLE.get(node.op_type, ())
                 if i < len(node.input) and node.input[i]} if trainable else set()
        self.constants, self.params = {}, {}
        for tensor in graph.initializer:
            array = numpy_helper.to_array(tensor)
            value = torch.from_numpy(np.array(array))
            if tensor.name in learn and value.is_floating_point():
                self.params[tensor.name] = value.float().requires_grad_(True)
            else:
                self.constants[tensor.name] = value
        for node in self.nodes:
            if node.op_type == "Constant":
                raise UnsupportedGraph(f"Constant node {node.name!r} (fold constants into initializers first)")

    def parameters(self) -> list:
        return list(self.params.values())

    def run(self, inputs: list, capture: tuple = ()) -> tuple[list, dict]:
        """(graph outputs, {name: tensor} for ``capture``) for torch tensor ``inputs`` in graph-input order."""
        env = dict(self.constants)
        env.update(self.params)
        env.update(zip(self.inputs, inputs))
        for node, attrs in zip(self.nodes, self.attrs):
            args = [env[name] if name else None for name in node.input]
            while args and args[-1] is None:
                args.pop()
            result = self.table[node.op_type](attrs, *args)
            env[node.output[0]] = result
        return [env[n] for n in self.outputs], {n: env[n] for n in capture}

    def weights(self) -> dict[str, np.ndarray]:
        """Current trainable tensors as numpy arrays, by initializer name."""
        return {name: p.detach().numpy().copy() for name, p in self.params.items()}
