"""Emitters: IR -> the model file of a bundle, plus a runner for it and its io signature.

``EMITTERS`` (an ``edgec.registry.Registry``) maps a format to ``module:function``; the function takes ``(model, source, bundle_dir, profile,
options, state)`` (``state`` the compile's ``edgec.compiler.state.CompileState``) and returns an ``EmittedModel``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from edgec.errors import UsageError
from edgec.registry import Registry

__all__ = ["EMITTERS", "EmittedModel", "emitter_for"]

EMITTERS = Registry("emitter")
EMITTERS.add("onnx", "edgec.compiler.emit.onnx:emit_onnx")
EMITTERS.add("tflite", "edgec.compiler.emit.tflite:emit_tflite")


def _identity(arrays: list) -> list:
    return arrays


@dataclass
class EmittedModel:
    model_file: str  # path inside the bundle
    format: str
    runtime: str  # the edgec runtime name that runs it
    io: dict  # io signature of the emitted model (names, shapes, dtypes, layouts)
    runner: Callable[[list], list]  # runs the emitted file: inputs in emitted io order and layout
    # Convert IR-layout inputs to the emitted model's layout/dtype, and its outputs back to the IR's.
    to_model: Callable[[list], list] = _identity
    from_model: Callable[[list], list] = _identity
    settings: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    quantized: bool = False


def emitter_for(fmt: str):
    if fmt not in EMITTERS:
        raise UsageError(f"--format {fmt!r}: this edgec emits {', '.join(EMITTERS)}")
    return EMITTERS.get(fmt)
