"""LiteRT (TFLite, XNNPACK) versions of the calibration suite's models, built with TensorFlow's own converter.

The same chains as ``microbench`` (NHWC here, as TFLite runs them): fp32; ``fp16`` = float16 weights (XNNPACK
runs them in fp16 where the CPU has fp16 arithmetic, else dequantizes them); ``int8`` = full-integer kernels
calibrated on a representative dataset (float input and output, quantized inside); ``int8-dynamic`` = dynamic-
range quantization. TensorFlow is imported only here, on the host, when the device has LiteRT.
"""

from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["available", "nhwc_shape", "tflite_bytes"]


def available() -> bool:
    """TensorFlow's converter is importable on this host."""
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def nhwc_shape(shape: tuple) -> tuple:
    return shape if len(shape) == 2 else (shape[0], shape[2], shape[3], shape[1])


def _layers(spec, tf, rng):
    """The chain as a function of x, with its weights as constants."""
    c = spec.shape[1]
    steps = []
    for i in range(spec.repeat):
        cin, cout = (c, c * spec.expand) if i % 2 == 0 else (c * spec.expand, c)
        if spec.op == "gemm":
            w = tf.constant((rng.standard_normal((c, c)) / math.sqrt(c)).astype(np.float32))
            b = tf.constant((rng.standard_normal(c) * 0.1).astype(np.float32))
            steps.append(lambda x, w=w, b=b: tf.matmul(x, w) + b)
        elif spec.op in ("conv1x1", "conv3x3"):
            k = 1 if spec.op == "conv1x1" else 3
            w = tf.constant((rng.standard_normal((k, k, cin, cout)) / math.sqrt(cin * k * k)).astype(np.float32))
            b = tf.constant((rng.standard_normal(cout) * 0.1).astype(np.float32))
            steps.append(lambda x, w=w, b=b: tf.nn.conv2d(x, w, 1, "SAME") + b)
        elif spec.op == "dwconv":
            w = tf.constant((rng.standard_normal((3, 3, c, 1)) / 3.0).astype(np.float32))
            b = tf.constant((rng.standard_normal(c) * 0.1).astype(np.float32))
            steps.append(lambda x, w=w, b=b: tf.nn.depthwise_conv2d(x, w, [1, 1, 1, 1], "SAME") + b)
        elif spec.op == "pool":
            steps.append(lambda x: tf.nn.max_pool2d(x, 3, 1, "SAME"))
        else:
            steps.append(lambda x, a=0.5 / (i + 1): x + a)
    return steps


def tflite_bytes(spec, sample_nhwc: np.ndarray) -> bytes:
    """The .tflite flatbuffer of ``spec`` at its precision."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    steps = _layers(spec, tf, np.random.default_rng(sum(spec.op.encode()) + spec.shape[1]))

    @tf.function(input_signature=[tf.TensorSpec(nhwc_shape(spec.shape), tf.float32)])
    def chain(x):
        for step in steps:
            x = step(x)
        return x

    converter = tf.lite.TFLiteConverter.from_concrete_functions([chain.get_concrete_function()], chain)
    if spec.precision != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if spec.precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif spec.precision == "int8":
        converter.representative_dataset = lambda: ([sample_nhwc * scale] for scale in (1.0, 0.5, -0.7))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()
