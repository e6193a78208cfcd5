"""TensorFlow -> TFLite flatbuffer with ``tf.lite.TFLiteConverter``: one function for every source and variant.

Both TFLite paths end here: Keras sources hand over their own model, PyTorch and ONNX sources the tf_keras model
onnx2tf built from the float ONNX. The model is wrapped in a ``tf.function`` with a fixed input signature whose
outputs are a dict keyed by the IR's output names, so the flatbuffer's ``serving_default`` signature maps every
tensor back to the IR name (TFLite does not keep the order of outputs).

Variants: ``fp32``; ``fp16`` (weights stored as float16); ``int8`` (full integer, calibrated on a representative
dataset, int8/uint8/float32 model I/O); ``dynamic`` (int8 weights, float activations). int8 is two steps,
``calibrate`` then ``quantize_calibrated``, so that the accuracy guard re-quantizes one calibration with single ops
kept float (``_tflite_select``) instead of calibrating again for each try.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import numpy as np

from edgec.errors import CompileError

__all__ = ["VARIANTS", "calibrate", "convert_function", "float_ops", "op_table", "quantize_calibrated",
           "serving_function"]

VARIANTS = ("fp32", "fp16", "int8", "dynamic")


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def serving_function(call: Callable, inputs: list[dict], output_names: list[str], model):
    """A ``tf.Module`` whose ``serve`` takes ``inputs`` (name, shape, dtype) and returns {output name: tensor}.

    The variables ``call`` uses hang on the module: the converter only writes the signature map when every
    captured variable is tracked by the object it is given. They are tracked as the plain ``tf.Variable``s under
    Keras 3 variables: tracking the Keras 3 model itself leaves READ_VARIABLE ops (garbage outputs, calibration
    failing) in the flatbuffer.
    """
    tf = _tf()
    specs = [tf.TensorSpec(i["shape"], tf.as_dtype(i["dtype"]), name=i["name"]) for i in inputs]

    def serve(*args):
        outputs = call(list(args))
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        if len(outputs) != len(output_names):
            raise CompileError(f"the TensorFlow model returns {len(outputs)} outputs, the IR has "
                               f"{len(output_names)} ({', '.join(output_names)})")
        return {name: tensor for name, tensor in zip(output_names, outputs)}

    holder = tf.Module()
    holder.tracked = [v if isinstance(v, tf.Variable) else v.value for v in getattr(model, "variables", [])]
    if not hasattr(model, "variables") or not holder.tracked:
        holder.model = model  # a loaded SavedModel object tracks its own variables
    holder.serve = tf.function(serve, input_signature=specs)
    return holder


def _representative(samples: Iterable[list[np.ndarray]], names: list[str]):
    def generate():
        for arrays in samples:
            yield {name: np.asarray(a) for name, a in zip(names, arrays)}

    return generate


def calibrate(holder, input_names: list[str], samples: Iterable[list[np.ndarray]]) -> bytes:
    """The float flatbuffer with the ranges of every tensor on ``samples`` (the converter's calibrate-only mode,
    as its quantization debugger uses it): quantized afterwards by ``quantize_calibrated``, as many times as the
    accuracy guard asks, without calibrating again."""
    tf = _tf()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([holder.serve.get_concrete_function()], holder)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(list(samples), input_names)
    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True  # pylint: disable=protected-access
    try:
        return converter.convert()
    except Exception as exc:  # the converter raises ConverterError/RuntimeError/ValueError with MLIR text
        raise CompileError(f"TFLiteConverter could not build the int8 model: {_reason(exc)}; "
                           "try another --quantize or --format onnx") from None


def quantize_calibrated(calibrated: bytes, io_dtype: str, float_nodes=()) -> bytes:
    """Per-channel int8 of a ``calibrate``d model with int8/uint8/float32 model I/O, what TFLiteConverter's
    full-integer conversion writes; the ops whose output tensors ``float_nodes`` names stay float (LiteRT runs
    them between DEQUANTIZE/QUANTIZE). Full integer (no ``float_nodes``): an op left in float is an error."""
    from tensorflow.lite.python import convert

    tf = _tf()
    try:
        content = convert.mlir_quantize(calibrated, input_data_type=tf.as_dtype(io_dtype),
                                        output_data_type=tf.as_dtype(io_dtype),
                                        denylisted_nodes=list(float_nodes) or None)
    except Exception as exc:
        raise CompileError(f"TFLiteConverter could not build the int8 model: {_reason(exc)}; "
                           "try another --quantize or --format onnx") from None
    if not float_nodes:
        left = float_ops(content)
        if left:
            raise CompileError(f"TFLiteConverter could not build the int8 model: {left[0][0]} "
                               f"({left[0][1]}) has no int8 kernel and stays float; try --format onnx")
    return content


def op_table(content: bytes) -> tuple[list[dict], dict[int, dict]]:
    """(the ops of a TFLite model in execution order, tensor index -> tensor details), as LiteRT reads them."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    return interpreter._get_ops_details(), tensors  # pylint: disable=protected-access


def float_ops(content: bytes) -> list[tuple[str, str]]:
    """(op type, output tensor name) of the ops computing float32 values (not QUANTIZE/DEQUANTIZE) in a model."""
    ops, tensors = op_table(content)
    found = []
    for op in ops:
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        outputs = [tensors[i] for i in op["outputs"] if i >= 0]
        if any(t["dtype"] == np.float32 for t in outputs):
            found.append((op["op_name"], outputs[0]["name"]))
    return found


def _reason(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return next((line for line in lines if "error:" in line), lines[0] if lines else type(exc).__name__)


def convert_function(holder, variant: str, input_names: list[str],
                     samples: Iterable[list[np.ndarray]] | None = None, io_dtype: str = "int8") -> bytes:
    """Convert the ``serving_function`` to a .tflite flatbuffer.

    Args:
        holder: from ``serving_function``.
        variant: one of ``VARIANTS``.
        input_names: the function's input names, in order (keys of the representative dataset).
        samples: calibration samples in the model's layout, batch of one each (``int8`` only).
        io_dtype: model input/output dtype for ``int8``: "int8", "uint8" or "float32".

    Raises:
        CompileError: naming the converter's first line of complaint.
    """
    tf = _tf()
    if variant not in VARIANTS:
        raise CompileError(f"TFLite variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    if variant == "int8":
        if samples is None:
            raise CompileError("full-integer TFLite needs calibration samples")
        return quantize_calibrated(calibrate(holder, input_names, samples), io_dtype)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([holder.serve.get_concrete_function()], holder)
    if variant != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        return converter.convert()
    except Exception as exc:  # the converter raises ConverterError/RuntimeError/ValueError with MLIR text
        raise CompileError(f"TFLiteConverter could not build the {variant} model: {_reason(exc)}; "
                           "try another --quantize or --format onnx") from None
