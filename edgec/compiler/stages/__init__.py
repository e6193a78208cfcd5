"""Compile stages run between the float passes and emission (see ``STAGES`` in edgec/compiler/pipeline.py).

Each module has ``apply(model, source, profile, options, context) -> (model, records)``: ``records`` are pass
records for the manifest, ``context`` carries what later stages and the emitter need ("precision",
"calibration", "quantized", "report", ...). Compression (``compress``) runs first, then ``quantize``.
"""
