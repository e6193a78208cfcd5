"""IR passes, one per module (``<verb>_<noun>.py``), built on onnx-ir's pass infrastructure.

Every edgec pass explains itself: ``notes`` collect what it changed and what it left alone and why; the
pipeline copies them into the compile report (``edgec compile --explain`` prints them).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

__all__ = ["EdgecPass", "FunctionalEdgecPass", "add_initializer", "set_input_const"]


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
