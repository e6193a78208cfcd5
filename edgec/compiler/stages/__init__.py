"""Compile stages run between the float passes and emission (see ``STAGES`` in edgec/compiler/pipeline.py).

Each module has ``apply(model, source, profile, options, state) -> (model, records)``: ``records`` are
``PassRecord``s for the manifest, ``state`` (``edgec.compiler.state.CompileState``) carries what later stages and
the emitter need (precision, calibration, quantized, report, ...). Compression (``compress``) runs first, then
``quantize``.
"""
