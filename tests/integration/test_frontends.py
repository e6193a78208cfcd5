"""Every front-end compiles, verifies and inspects, within 1e-5 relative of its source framework."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgec import api
from edgec.bundle import Bundle
from tests.conftest import TINY_MOBILENET, TINY_MOBILENET_SHAPE

pytestmark = pytest.mark.integration


def _check(bundle: Bundle, kind: str, dynamic_batch: bool = True) -> None:
    manifest = bundle.manifest
    assert manifest["source"]["kind"] == kind
    assert manifest["format"] == "onnx" and (bundle.path / "model.onnx").is_file()
    for check in manifest["report"]["verification"]:
        assert check["max_rel_diff"] <= 1e-5, check
    assert [c["stage"] for c in manifest["report"]["verification"]] == ["front-end", "float passes", "emitted onnx"]
    assert (manifest["io"]["inputs"][0]["shape"][0] is None) == dynamic_batch
    result = api.verify_bundle(bundle.path)
    assert result["ok"] and all(r["ok"] for r in result["outputs"])
    assert api.inspect_bundle(bundle.path)["bundle_id"] == bundle.bundle_id


def test_seed_linear_regression_h5(seed_h5, tmp_path):
    bundle = api.compile(str(seed_h5), tmp_path / "b", target="rpi4", format="onnx")
    _check(bundle, "keras-h5")
    # The model learnt y = 2x + 1: the bundle's own reference outputs say so.
    inputs, outputs = bundle.reference()
    np.testing.assert_allclose(outputs[0], 2 * inputs[0] + 1, atol=0.5)
    assert bundle.manifest["target"]["name"] == "rpi4"


def test_keras_cnn_dot_keras(keras_cnn_file, tmp_path):
    bundle = api.compile(str(keras_cnn_file), tmp_path / "b", target="host")
    _check(bundle, "keras")
    assert bundle.manifest["io"]["inputs"][0]["layout"] == "NHWC"


def test_savedmodel_directory(tmp_path):
    import tensorflow as tf

    from edgec.examples.keras_models import _keras

    keras = _keras()
    model = keras.Sequential([keras.layers.Input(shape=(6,)), keras.layers.Dense(4, activation="tanh"),
                              keras.layers.Dense(2)])
    model.export(str(tmp_path / "sm"))
    assert tf.saved_model.contains_saved_model(str(tmp_path / "sm"))
    _check(api.compile(str(tmp_path / "sm"), tmp_path / "b", target="host"), "savedmodel")


def test_pytorch_factory_mobilenet_style(tmp_path):
    bundle = api.compile(TINY_MOBILENET, tmp_path / "b", target="host", input_shapes=TINY_MOBILENET_SHAPE)
    _check(bundle, "torch-factory")
    assert "batch dimension exported as dynamic" in bundle.manifest["report"]["source_notes"]


def test_pytorch_factory_from_a_file(tmp_path):
    source = tmp_path / "nets.py"
    source.write_text("from edgec.examples.torch_models import tiny_mobilenet\n\n"
                      "def build():\n    return tiny_mobilenet(num_classes=5)\n")
    bundle = api.compile(f"{source}:build", tmp_path / "b", target="host", input_shapes={"x": [1, 3, 32, 32]})
    _check(bundle, "torch-factory")
    assert bundle.manifest["io"]["outputs"][0]["shape"] == [None, 5]


def test_pt2_export(tiny_mobilenet_pt2, tmp_path):
    _check(api.compile(str(tiny_mobilenet_pt2), tmp_path / "b", target="host"), "torch-export")


def test_torchscript(tmp_path):
    import torch

    from edgec.examples.torch_models import tiny_mobilenet

    path = tmp_path / "m.ts"
    torch.jit.save(torch.jit.trace(tiny_mobilenet(), torch.randn(2, 3, 32, 32)), path)
    _check(api.compile(str(path), tmp_path / "b", target="host", input_shapes={"x": [1, 3, 32, 32]}),
           "torchscript")


def test_onnx_file_folds_batchnorm_and_lifts_constants(tiny_mobilenet_onnx, tmp_path):
    import onnx

    bundle = api.compile(str(tiny_mobilenet_onnx), tmp_path / "b", target="x86-avx2")
    _check(bundle, "onnx")
    ops = {n.op_type for n in onnx.load(str(bundle.path / "model.onnx")).graph.node}
    assert "BatchNormalization" not in ops and "Constant" not in ops
    fold = next(p for p in bundle.manifest["passes"] if p["name"] == "fold-batchnorm")
    assert fold["notes"][0] == "folded 16 BatchNormalization into Conv"


def test_onnx_with_external_data_and_old_opset(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 256])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.onnx.data",
              size_threshold=0)
    bundle = api.compile(str(tmp_path / "ext.onnx"), tmp_path / "b", target="host")
    _check(bundle, "onnx")
    assert "opset upgraded from 11 to 18" in bundle.manifest["report"]["source_notes"]


def test_same_inputs_give_a_byte_identical_bundle(tiny_mobilenet_onnx, tmp_path):
    first = api.compile(str(tiny_mobilenet_onnx), tmp_path / "a", target="host")
    second = api.compile(str(tiny_mobilenet_onnx), tmp_path / "b", target="host")
    assert first.bundle_id == second.bundle_id
    assert (first.path / "model.onnx").read_bytes() == (second.path / "model.onnx").read_bytes()


def test_manifest_records_what_a_device_needs(tiny_mobilenet_onnx, tmp_path):
    bundle = api.compile(str(tiny_mobilenet_onnx), tmp_path / "b", target="rpi4", format="onnx")
    m = json.loads((bundle.path / "manifest.json").read_text())
    assert m["schema_version"] == 1 and m["edgec_version"]
    assert m["target"]["profile_sha256"] and m["source"]["sha256"]
    assert set(m["files"]) == {"model.onnx", "reference/inputs.npz", "reference/outputs.npz"}
    assert m["io"]["inputs"][0] == {"name": "x", "shape": [None, 3, 32, 32], "dtype": "float32", "layout": "NCHW"}
    assert (bundle.path / "logs" / "compile.log").is_file()


def test_ir3_zoo_model_with_weights_listed_as_inputs(tmp_path):
    import os

    import onnx

    path = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_squeezenet.onnx")
    bundle = api.compile(path, tmp_path / "b", target="host")
    _check(bundle, "onnx", dynamic_batch=False)
    assert [i["name"] for i in bundle.manifest["io"]["inputs"]] == ["data_0"]
    assert any("initializers removed from the graph inputs" in n for n in bundle.manifest["report"]["source_notes"])
