"""TensorFlow -> TFLite flatbuffer with ``tf.lite.TFLiteConverter``: one function for every source and variant.

Both TFLite paths end here: Keras sources hand over their own model, PyTorch and ONNX sources the tf_keras model
onnx2tf built from the float ONNX. The model is wrapped in a ``tf.function`` with a fixed input signature whose
outputs are a dict keyed by the IR's output names, so the flatbuffer's ``serving_default`` signature maps every
tensor back to the IR name (TFLite does not keep the order of outputs).

Variants: ``fp32``; ``fp16`` (weights stored as float16); ``int8`` (full integer, calibrated on a representative
dataset, int8/uint8/float32 model I/O); ``dynamic`` (int8 weights, float activations).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import numpy as np

from edgec.errors import CompileError

__all__ = ["VARIANTS", "convert_function", "serving_function"]

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


def _selective(tf, converter, samples: list, names: list[str], float_ops, io_dtype: str) -> bytes:
    """int8 with the op types ``float_ops`` left in float (the converter's quantization debugger)."""
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(float_ops),
                                                            fully_quantize=io_dtype != "float32")
    dataset = _representative(samples, names)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=lambda: ([s[n] for n in names] for s in dataset()),
        debug_options=options)
    return debugger.get_nondebug_quantized_model()


def convert_function(holder, variant: str, input_names: list[str],
                     samples: Iterable[list[np.ndarray]] | None = None, io_dtype: str = "int8",
                     float_ops: tuple[str, ...] = ()) -> bytes:
    """Convert the ``serving_function`` to a .tflite flatbuffer.

    Args:
        holder: from ``serving_function``.
        variant: one of ``VARIANTS``.
        input_names: the function's input names, in order (keys of the representative dataset).
        samples: calibration samples in the model's layout, batch of one each (``int8`` only).
        io_dtype: model input/output dtype for ``int8``: "int8", "uint8" or "float32".
        float_ops: TFLite op types (``DEPTHWISE_CONV_2D``...) kept in float inside an otherwise int8 model
            (``int8`` only): the converter's quantization debugger deny-lists them (selective quantization);
            model I/O is then int8 (or float32 when ``io_dtype`` says so).

    Raises:
        CompileError: naming the converter's first line of complaint.
    """
    tf = _tf()
    if variant not in VARIANTS:
        raise CompileError(f"TFLite variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    converter = tf.lite.TFLiteConverter.from_concrete_functions([holder.serve.get_concrete_function()], holder)
    if variant != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        if samples is None:
            raise CompileError("full-integer TFLite needs calibration samples")
        samples_list = list(samples)
        converter.representative_dataset = _representative(samples_list, input_names)
        # Full integer: a float op left over is an error, not a silent float island in an "int8" model.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.as_dtype(io_dtype)
        converter.inference_output_type = tf.as_dtype(io_dtype)
    try:
        if variant == "int8" and float_ops:
            return _selective(tf, converter, list(samples_list), input_names, float_ops, io_dtype)
        return converter.convert()
    except Exception as exc:  # the converter raises ConverterError/RuntimeError/ValueError with MLIR text
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = next((line for line in lines if "error:" in line), lines[0] if lines else type(exc).__name__)
        raise CompileError(f"TFLiteConverter could not build the {variant} model: {reason}; "
                           "try another --quantize or --format onnx") from None
