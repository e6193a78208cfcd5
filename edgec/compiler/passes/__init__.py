"""IR passes, one per module (``<verb>_<noun>.py``), built on onnx-ir's pass infrastructure.

Every edgec pass explains itself: ``notes`` collect what it changed and what it left alone and why; the
pipeline copies them into the compile report (``edgec compile --explain`` prints them).
"""

from __future__ import annotations

import onnx_ir as ir

__all__ = ["EdgecPass", "FunctionalEdgecPass"]


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
