"""Compile stages run between the float passes and emission, in ``STAGE_ORDER``; ``STAGES`` (an
``edgec.registry.Registry``) maps each name to its ``apply``, imported when the pipeline runs it.

Each module has ``apply(model, source, profile, options, state) -> (model, records)``: ``records`` are
``PassRecord``s for the manifest, ``state`` (``edgec.compiler.state.CompileState``) carries what later stages and
the emitter need (precision, calibration, quantized, report, ...). Compression (``compress``) runs first, then
``quantize``.
"""

from edgec.registry import Registry

__all__ = ["STAGES", "STAGE_ORDER"]

STAGES = Registry("stage")
STAGES.add("compress", "edgec.compiler.stages.compress:apply")
STAGES.add("quantize", "edgec.compiler.stages.quantize:apply")
STAGE_ORDER = ("compress", "quantize")  # pruning works on float weights, so it runs before quantization
