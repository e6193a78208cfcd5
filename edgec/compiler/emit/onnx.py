"""ONNX emitter: the IR as one ``model.onnx``, run with onnxruntime."""

from __future__ import annotations

from pathlib import Path

from edgec import ir as edgec_ir
from edgec.compiler.emit import EmittedModel
from edgec.runtimes import onnxruntime as ort_runtime

__all__ = ["emit_onnx"]


def emit_onnx(model, source, bundle_dir: Path, profile, options, state) -> EmittedModel:
    path = bundle_dir / "model.onnx"
    edgec_ir.save(model, path)
    session = ort_runtime.load(path, threads=profile.threads)
    io = edgec_ir.io_signature(model, source.layouts)
    return EmittedModel(model_file="model.onnx", format="onnx", runtime="onnxruntime", io=io,
                        runner=session.run, quantized=state.quantized)
