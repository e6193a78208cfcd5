"""Which precision a model gets: --quantize, the profile's default, and auto from the model's structure."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec import ir as edgec_ir
from edgec.compiler.options import CompileOptions
from edgec.compiler.stages.quantize_policy import model_profile, resolve_precision
from edgec.errors import UsageError
from edgec.targets import load_profile

pytestmark = pytest.mark.unit


def _conv(channels: int, size: int):
    weight = numpy_helper.from_array(np.zeros((channels, channels, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, size, size])],
                              [weight])
    return edgec_ir.from_proto(onnx.shape_inference.infer_shapes(helper.make_model(graph)))


def _matmul(rows: int, cols: int):
    weight = numpy_helper.from_array(np.zeros((rows, cols), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, rows])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, cols])], [weight])
    return edgec_ir.from_proto(onnx.shape_inference.infer_shapes(helper.make_model(graph)))


def _resolve(model, quantize, target="x86-avx512-vnni", has_data=True, fmt="onnx"):
    return resolve_precision(model, load_profile(target), CompileOptions(quantize=quantize), fmt, has_data)


def test_model_profile_counts_macs_and_channels():
    stats = model_profile(_conv(256, 32))
    assert stats["macs"] == 256 * 256 * 9 * 32 * 32 and stats["mean_channels"] == 256 and stats["convs"] == 1


def test_auto_picks_int8_for_wide_convs_float_for_narrow_or_tiny_and_int4_for_big_matmuls():
    assert _resolve(_conv(256, 32), "auto")[0] == "int8"
    precision, reason = _resolve(_conv(32, 64), "auto")
    assert precision == "none" and "quantization.auto_min_channels 128" in reason
    precision, reason = _resolve(_conv(64, 8), "auto")
    assert precision == "none" and "quantization.auto_min_macs" in reason
    precision, reason = _resolve(_matmul(1024, 1024), "auto")
    assert precision == "int4" and "MatMul/Gemm hold 100%" in reason
    assert _resolve(_matmul(1024, 1024), "auto", fmt="tflite")[0] == "int8"  # int4 is onnxruntime-only
    precision, reason = _resolve(_conv(256, 32), "auto", has_data=False)
    assert precision == "none" and "no --calibration" in reason


def test_profile_default_without_data_stays_float_and_explicit_requests_are_checked():
    assert _resolve(_conv(256, 32), None, has_data=False)[0] == "none"
    assert _resolve(_conv(256, 32), None)[0] == "int8"
    with pytest.raises(UsageError, match="needs calibration data"):
        _resolve(_conv(256, 32), "int8", has_data=False)
    with pytest.raises(UsageError, match=r"quantization\.fp16_arithmetic = false"):
        _resolve(_conv(256, 32), "fp16")
    with pytest.raises(UsageError, match=r"quantization\.supported"):
        _resolve(_matmul(64, 64), "int4", target="android-arm64")


def test_the_profile_thresholds_drive_auto():
    profile = load_profile("x86-avx512-vnni")
    lower = dataclasses.replace(profile, quantization=dataclasses.replace(profile.quantization, auto_min_channels=16))
    precision, _ = resolve_precision(_conv(32, 64), lower, CompileOptions(quantize="auto"), "onnx", True)
    assert precision == "int8"
