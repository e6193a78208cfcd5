"""Selective TFLite int8: op types deny-listed through the converter's quantization debugger stay float inside an
otherwise int8 model with int8 I/O, and the emitter tries op types cheapest first."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def keras_cnn():
    import keras

    inputs = keras.Input((16, 16, 3), batch_size=1, name="x")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(16, 1, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def _ops_and_io(content: bytes):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    ops = [d["op_name"] for d in interpreter._get_ops_details()]
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    return ops, interpreter, tensors


def test_deny_listed_op_type_stays_float_with_int8_io(keras_cnn):
    from edgec.compiler.emit import _tflite_convert as tfl

    model = keras_cnn
    holder = tfl.serving_function(lambda args: model(args[0]), [{"name": "x", "shape": [1, 16, 16, 3],
                                                                 "dtype": "float32"}], ["y"], model)
    samples = [[np.random.default_rng(k).random((1, 16, 16, 3), np.float32)] for k in range(8)]
    content = tfl.convert_function(holder, "int8", ["x"], iter(samples), "int8", ("DEPTHWISE_CONV_2D",))
    ops, interpreter, tensors = _ops_and_io(content)
    assert "DEPTHWISE_CONV_2D" in ops and "DEQUANTIZE" in ops and "CONV_2D" in ops
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    for detail in interpreter._get_ops_details():
        dtypes = {tensors[i]["dtype"] for i in detail["inputs"] if i >= 0}
        if detail["op_name"] == "DEPTHWISE_CONV_2D":
            assert dtypes == {np.float32}  # weights and activations float
        elif detail["op_name"] == "CONV_2D":
            assert np.int8 in dtypes
    full = tfl.convert_function(holder, "int8", ["x"], iter(samples), "int8")
    assert "DEQUANTIZE" not in _ops_and_io(full)[0]  # full integer: no float island


def test_op_types_are_tried_cheapest_first_never_all(tmp_path):
    import torch

    from edgec.compiler.emit._tflite_select import float_op_steps, op_type_weights
    from edgec.compiler.frontends import lower
    from edgec.examples.torch_models import tiny_mobilenet

    path = tmp_path / "m.pt2"
    example = torch.zeros(1, 3, 32, 32)
    torch.export.save(torch.export.export(tiny_mobilenet().eval(), (example,)), path)
    model = lower(str(path), {}).model
    weights = op_type_weights(model)
    assert set(weights) == {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
    steps = float_op_steps(model)
    assert len(steps) == 2 and len(steps[0][0]) == 1 and len(steps[1][0]) == 2
    assert weights[steps[0][0][0]] == min(weights.values())
    assert max(weights, key=weights.get) not in steps[-1][0]
    assert 0 < steps[0][1] < steps[1][1] < 1
