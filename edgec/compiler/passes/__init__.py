"""IR passes, one per module (``<verb>_<noun>.py``), built on onnx-ir's pass infrastructure.

Every edgec pass explains itself: ``notes`` collect what it changed and what it left alone and why; the
pipeline copies them into the compile report (``edgec compile --explain`` prints them).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common

__all__ = ["EdgecPass", "FunctionalEdgecPass", "NodeRewritePass", "add_initializer", "const", "set_input_const"]


def const(value: ir.Value | None) -> np.ndarray | None:
    """The numpy value of a constant (initializer) input, or None."""
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """Register ``array`` as a new initializer called ``name`` (underscores appended until it is unique)."""
    while name in graph.initializers:
        name += "_"
    value = ir.Value(name=name, const_value=ir.tensor(np.ascontiguousarray(array)))
    graph.register_initializer(value)
    return value


def set_input_const(graph: ir.Graph, node: ir.Node, index: int, array: np.ndarray, name: str) -> ir.Value:
    """Feed ``node`` input ``index`` from a new initializer holding ``array`` (other users of the old input keep
    it); the input list grows when ``index`` is past its end."""
    value = add_initializer(graph, name, array)
    if index >= len(node.inputs):
        node.resize_inputs(index + 1)
    node.replace_input_with(index, value)
    return value


class _Explained:
    """Mixin: a kebab-case ``name``, the ``settings`` the pass ran with, and ``notes`` for the report."""

    name = ""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def settings(self) -> dict:
        return {}

    def note(self, message: str) -> None:
        self.notes.append(message)


class EdgecPass(_Explained, ir.passes.InPlacePass):
    """A pass that edits the model in place."""


class FunctionalEdgecPass(_Explained, ir.passes.FunctionalPass):
    """A pass that returns a new model (e.g. a round trip through a proto-level tool)."""


class NodeRewritePass(EdgecPass):
    """Rewrites every standard-domain ``op_type`` node it can; notes how many (``done_note``, with ``{count}``) and
    each node it kept, with ``why_not``'s reason. Subclasses give ``why_not(node)`` and ``rewrite(graph, node)``."""

    op_type = ""
    done_note = ""

    def why_not(self, node: ir.Node) -> str | None:
        raise NotImplementedError

    def rewrite(self, graph: ir.Graph, node: ir.Node) -> None:
        raise NotImplementedError

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        done, kept = 0, []
        for node in list(model.graph):
            if node.op_type != self.op_type or node.domain not in ("", "ai.onnx"):
                continue
            reason = self.why_not(node)
            if reason:
                kept.append(f"kept {self.op_type} {node.name or '(unnamed)'}: {reason}")
                continue
            self.rewrite(model.graph, node)
            done += 1
        self.note(self.done_note.format(count=done))
        self.notes.extend(kept)
        if done:
            ir.passes.common.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, done > 0)
