"""Selective TFLite int8: single ops deny-listed by output tensor name stay float inside an otherwise int8 model
with int8 I/O, re-quantized from one calibration, and the accuracy guard picks them by measured sensitivity."""
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


def _holder(model):
    from edgec.compiler.emit import _tflite_convert as tfl

    return tfl.serving_function(lambda args: model(args[0]), [{"name": "x", "shape": [1, 16, 16, 3],
                                                               "dtype": "float32"}], ["y"], model)


def test_a_deny_listed_op_stays_float_in_an_otherwise_int8_model_with_int8_io(keras_cnn):
    from edgec.compiler.emit import _tflite_convert as tfl
    from edgec.compiler.emit._tflite_select import Requantizer

    samples = [[np.random.default_rng(k).random((1, 16, 16, 3), np.float32)] for k in range(8)]
    requantizer = Requantizer(tfl.calibrate(_holder(keras_cnn), ["x"], samples), "int8")
    assert [op.op for op in requantizer.weighted] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "FULLY_CONNECTED"]
    depthwise = requantizer.weighted[1]
    assert depthwise.params == 3 * 3 * 8 and depthwise.macs == 16 * 16 * 8 * 9
    assert depthwise.label == "DEPTHWISE_CONV_2D#1"
    content = requantizer.quantize(exclude=[depthwise.label])
    ops, interpreter, tensors = _ops_and_io(content)
    assert "DEQUANTIZE" in ops and "QUANTIZE" in ops
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    kinds = {}
    for detail in interpreter._get_ops_details():
        dtypes = {tensors[i]["dtype"] for i in detail["inputs"] if i >= 0}
        kinds.setdefault(detail["op_name"], []).append(dtypes)
    assert kinds["DEPTHWISE_CONV_2D"] == [{np.float32}]  # weights and activations float
    assert all(np.int8 in dtypes for dtypes in kinds["CONV_2D"])  # the other ops of the model stay int8
    assert tfl.float_ops(content) == [("DEPTHWISE_CONV_2D", depthwise.name)]
    full = requantizer.quantize()
    assert "DEQUANTIZE" not in _ops_and_io(full)[0] and tfl.float_ops(full) == []  # full integer: no float island
    alone = requantizer.quantize(only=[depthwise.label])
    assert [kind for kind, _ in tfl.float_ops(alone)].count("CONV_2D") == 2  # only the depthwise op quantized
    assert "DEPTHWISE_CONV_2D" not in [kind for kind, _ in tfl.float_ops(alone)]
    # Weightless ops that compute (the pooling's MEAN) are one group per type; ops that only move values
    # (RESHAPE) are none: int8 gives them their input's scale.
    assert list(requantizer.groups) == ["ops:MEAN"]
    mean = requantizer.groups["ops:MEAN"]
    assert mean.params == 0 and mean.macs == 16 and requantizer.figures()["ops:MEAN"] == (16, 0)
    assert tfl.float_ops(requantizer.quantize(exclude=["ops:MEAN"])) == [("MEAN", mean.name[0])]


def test_an_op_type_the_guard_keeps_float_is_one_report_row_listing_its_tensors(keras_cnn, monkeypatch):
    """The guard's candidates include the weightless op types, costed by their output elements (one operation
    each) as a share of the weighted ops' MACs, with no bytes; a group it keeps float is one row naming its
    tensors."""
    from edgec.compiler.emit import _tflite_convert as tfl
    from edgec.compiler.emit import tflite
    from edgec.compiler.emit._tflite_select import Requantizer
    from edgec.compiler.stages.quantize_cost import int8_speedup
    from edgec.compiler.stages.quantize_guard import GuardResult
    from edgec.targets import load_profile

    samples = [[np.random.default_rng(k).random((1, 16, 16, 3), np.float32)] for k in range(8)]
    requantizer = Requantizer(tfl.calibrate(_holder(keras_cnn), ["x"], samples), "int8")
    seen = {}
    noisy = {"drop": 2.0, "rel_error": 0.1, "sqnr_db": 20.0, "noise": 0.01}

    def guard(quantizer, evaluator, candidates, budget, **kwargs):
        seen.update(candidates=candidates, costs=kwargs["costs"])
        return GuardResult(quantizer.quantize(exclude=["ops:MEAN"]), {"drop": 0.5}, ["ops:MEAN"],
                           {"ops:MEAN": noisy}, [], costs=kwargs["costs"])

    monkeypatch.setattr("edgec.compiler.stages.quantize_guard.run_guard", guard)
    result = tflite._guard(requantizer, None, 1.0, load_profile("rpi4"), runner=None)
    assert seen["candidates"] == [op.label for op in requantizer.weighted] + ["ops:MEAN"]
    cost = seen["costs"]["ops:MEAN"]
    speedup, _ = int8_speedup(load_profile("rpi4"))
    share = (1 - 1 / speedup) * 16 / sum(op.macs for op in requantizer.weighted)
    assert cost["bytes"] == 0 and cost["time_share"] == round(share, 6) > 0
    rows = tflite._layer_rows(requantizer, result, 1.0)
    assert [row["node"] for row in rows] == seen["candidates"]
    group = rows[-1]
    assert group["precision"] == "float32" and group["group"] == requantizer.groups["ops:MEAN"].name
    assert "accuracy guard" in group["reason"] and "SQNR 20.0 dB" in group["reason"]
    assert all(row["precision"] == "int8" for row in rows[:-1])


def test_the_guard_keeps_the_ops_that_carry_the_noise_in_float(tmp_path):
    """A Keras CNN whose first conv writes a junk channel of 1000s that the next conv ignores: the per-tensor
    int8 range of that tensor crushes the real channels, at the conv that writes it and the one that reads it.
    The TFLite guard must find those two ops by their measured sensitivity and keep them float, while the third
    conv (same op type) and the head stay int8, say so in the report, and give the same bytes twice."""
    import keras

    from edgec import api

    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3), batch_size=1, name="x")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="first")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="second")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="third")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="head")(x))
    kernel, bias = model.get_layer("first").get_weights()
    kernel[..., 7], bias[7] = 0.0, 1000.0  # channel 7 is a constant 1000
    model.get_layer("first").set_weights([kernel, bias])
    kernel, bias = model.get_layer("second").get_weights()
    kernel[:, :, 7, :] = 0.0  # ... that the network ignores
    model.get_layer("second").set_weights([kernel, bias])
    path = tmp_path / "junk.keras"
    model.save(path)
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).random((96, 12, 12, 3), np.float32))
    options = {"target": "rpi4", "format": "tflite", "quantize": "int8", "calibration": str(tmp_path / "calib.npz"),
               "max_accuracy_drop": 1.0}
    bundle = api.compile(str(path), tmp_path / "out", **options)
    again = api.compile(str(path), tmp_path / "again", **options)
    # the same mixed model (the manifests differ in-process only: the Keras front-end numbers graph names per
    # process; test_tflite_bundles compares whole bundles from two processes)
    assert (tmp_path / "out/model.tflite").read_bytes() == (tmp_path / "again/model.tflite").read_bytes()
    assert again.manifest["report"]["tflite"]["float_ops"] == bundle.manifest["report"]["tflite"]["float_ops"]
    report = bundle.manifest["report"]
    rows = report["quantization"]["nodes"]
    assert [row["op"] for row in rows] == ["CONV_2D"] * 3 + ["FULLY_CONNECTED"], rows
    assert all(row["sensitivity"] and row["cost"] for row in rows), rows
    assert [row["precision"] for row in rows] == ["float32", "float32", "int8", "int8"], rows
    assert report["tflite"]["float_ops"] == [row["node"] for row in rows[:2]]
    assert all("accuracy guard" in row["reason"] for row in rows[:2])
    assert max(row["sensitivity"]["sqnr_db"] for row in rows[:2]) < min(row["sensitivity"]["sqnr_db"]
                                                                       for row in rows[2:])
    assert report["accuracy"]["tried"][0]["change"] == "all layers quantized"
    assert report["accuracy"]["evidence"]["accept"]
