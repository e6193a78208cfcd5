"""Quantizers: a float model in, lower-precision models out, any chosen set of nodes left in float.

They are not IR passes (``edgec.compiler.passes``): the quantization stage (``edgec.compiler.stages.quantize``) and
its accuracy guard call ``quantize`` many times on one calibrated quantizer, each time with other nodes excluded.

* ``int8.Int8Quantizer``: onnxruntime QDQ, calibrated once (minmax, entropy, percentile, mse);
* ``int4.Int4Quantizer``: MatMulNBits weights;
* ``fp16.Fp16Converter``: float16 weights and arithmetic, float32 I/O;
* ``common``: what they share (sessions over protos, channel statistics, weighted nodes, compaction).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterable

    import onnx

__all__ = ["Quantizer"]


class Quantizer(Protocol):
    """What the quantization stage and the accuracy guard need of a quantizer."""

    def settings(self) -> dict:
        """The settings it quantizes with, for the pass record."""

    def quantize(self, exclude: Iterable[str] = (), only: Iterable[str] | None = None) -> onnx.ModelProto:
        """The quantized model with the nodes ``exclude`` kept in float (or only the nodes ``only`` quantized)."""
