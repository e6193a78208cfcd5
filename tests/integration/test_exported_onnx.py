"""ONNX files as exporters write them: dynamic dims written -1/0/?/named, bare and partly dynamic --input-shape,
shapes from calibration data, dynamic dims kept in ONNX bundles and checked at a second size, already quantized
models, the format fallback and the one format the quantization stage reads."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec import api
from edgec.errors import UsageError
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def _detector(path, dims, opset: int = 13):
    """Conv 3->8 + ReLU + Conv 8->1 + Sigmoid (a tiny text-detector map), input dims written as given."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((1, 8, 3, 3)).astype(np.float32) * 0.3, "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["m"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["m"], ["map"])]
    graph = helper.make_graph(nodes, "det", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 1, 1])],
                              [helper.make_tensor_value_info("map", TensorProto.FLOAT, [1, 1, 1, 1])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    for value, channels in ((model.graph.input[0], 3), (model.graph.output[0], 1)):
        for axis, (dim, written) in enumerate(zip(value.type.tensor_type.shape.dim, dims)):
            dim.Clear()
            if isinstance(written, int):
                dim.dim_value = written if axis != 1 else channels  # -1 and 0 as older paddle2onnx writes them
            else:
                dim.dim_param = written
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("dims", [[-1, 3, -1, -1], [0, 3, 0, 0], ["?", 3, "?", "?"],
                                  ["p2o.DynamicDimension.0", 3, "p2o.DynamicDimension.1", "h"]])
def test_dynamic_dims_as_exporters_write_them_survive_and_are_checked_at_two_sizes(tmp_path, dims):
    source = _detector(tmp_path / "det.onnx", dims)
    bundle = api.compile(str(source), tmp_path / "b", target="host", input_shapes={"": [1, 3, 64, 96]})
    manifest = bundle.manifest
    assert manifest["io"]["inputs"][0]["shape"] == [None, 3, None, None]
    inputs = manifest["report"]["verification_inputs"]
    assert inputs["shapes"] == [[[1, 3, 64, 96]], [[2, 3, 96, 128]]] and "second size" in inputs["dynamic"]
    assert "generated" in inputs["source"]
    assert [c["stage"] for c in manifest["report"]["verification"]] == ["front-end", "float passes", "emitted onnx"]
    assert all(c["samples"] == 3 for c in manifest["report"]["verification"])
    if dims[0] == -1:
        assert any("-1/0 read as dynamic" in n for n in manifest["report"]["source_notes"])
    assert api.verify_bundle(bundle.path)["ok"]


def test_a_fully_dynamic_model_takes_its_shapes_from_calibration_data_of_any_array_name(tmp_path):
    source = _detector(tmp_path / "det.onnx", ["N", 3, "H", "W"])
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "pages.npz", images=rng.random((5, 3, 40, 56)).astype(np.float32))
    bundle = api.compile(str(source), tmp_path / "b", target="host", calibration=str(tmp_path / "pages.npz"),
                         quantize="none")
    inputs = bundle.manifest["report"]["verification_inputs"]
    assert "calibration samples" in inputs["source"] and inputs["shapes"][0] == [[1, 3, 40, 56]]
    assert bundle.reference()[0][0].shape == (1, 3, 40, 56)
    np.testing.assert_array_equal(bundle.reference()[0][0][0], np.load(tmp_path / "pages.npz")["images"][0])


def test_bad_shapes_get_one_line_with_a_usable_example_or_the_real_names(tmp_path):
    source = _detector(tmp_path / "det.onnx", [-1, 3, -1, -1])
    code, _out, err = run_cli(["compile", str(source), "-o", str(tmp_path / "b")])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "'x'" in lines[0] and "--input-shape 1x3x224x224" in lines[0], err
    with pytest.raises(UsageError, match="names 'image', but the model's inputs are x"):
        api.compile(str(source), tmp_path / "b", input_shapes={"image": [1, 3, 64, 64]})
    assert not (tmp_path / "b").exists()


def _quantized(tmp_path):
    """A tiny conv net quantized by onnxruntime's quantize_dynamic (ConvInteger, DynamicQuantizeLinear)."""
    from onnxruntime.quantization import quantize_dynamic

    float_path = _detector(tmp_path / "float.onnx", [1, 3, 32, 32])
    quantize_dynamic(str(float_path), str(tmp_path / "q.onnx"))
    return tmp_path / "q.onnx"


def _op_counts(path):
    import collections

    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_an_already_quantized_model_is_kept_as_it_is_and_verified(tmp_path):
    source = _quantized(tmp_path)
    before = _op_counts(source)
    assert before["ConvInteger"] == 2
    bundle = api.compile(str(source), tmp_path / "b", target="x86-avx512-vnni", quantize="int8",
                         calibration=None)
    quant = bundle.manifest["report"]["quantization"]
    assert quant["precision"] == "already quantized" and "ConvInteger x2" in quant["reason"]
    assert "--quantize int8 ignored" in quant["reason"]
    after = _op_counts(bundle.path / "model.onnx")
    assert after["ConvInteger"] == 2 and after["QuantizeLinear"] == 0
    assert all(c["tolerance"] is not None for c in bundle.manifest["report"]["verification"])
    assert bundle.manifest["reference"]["rtol"] == 5e-2  # integer kernels round differently across machines
    assert api.verify_bundle(bundle.path)["ok"]


def test_auto_format_falls_back_to_the_devices_other_runtime_and_says_why(tmp_path):
    source = _quantized(tmp_path)  # onnx2tf cannot convert ConvInteger
    code, _out, err = run_cli(["compile", str(source), "-t", "rpi4", "-o", str(tmp_path / "b")])
    assert code == 0, err
    assert "edgec: note: tflite conversion failed" in err and "fell back to onnx" in err
    assert "already quantized" in err
    from edgec.bundle import Bundle

    bundle = Bundle(tmp_path / "b")
    fmt = bundle.manifest["report"]["format"]
    assert bundle.format == "onnx" and fmt["chosen"] == "onnx"
    assert fmt["fallback"]["from"] == "tflite" and fmt["fallback"]["reason"]
    assert not (tmp_path / "b" / "model.tflite").exists()



def test_only_auto_may_fall_back():
    from edgec.compiler.options import CompileOptions
    from edgec.compiler.pipeline import _pick_format
    from edgec.targets import load_profile

    rpi4 = load_profile("rpi4")
    for fmt in (None, "auto"):
        assert _pick_format(rpi4, CompileOptions(target="rpi4", format=fmt))[::2] == ("tflite", "onnx")
    assert _pick_format(rpi4, CompileOptions(target="rpi4", format="tflite"))[::2] == ("tflite", None)
    assert _pick_format(rpi4, CompileOptions(target="rpi4", format="onnx"))[::2] == ("onnx", None)


def test_tflite_pins_dynamic_dims_to_the_reference_size_and_says_so(tmp_path):
    source = _detector(tmp_path / "det.onnx", [-1, 3, -1, -1])
    bundle = api.compile(str(source), tmp_path / "b", target="rpi4", format="tflite", input_shapes={"": [1, 3, 32, 48]})
    manifest = bundle.manifest
    assert manifest["io"]["inputs"][0]["shape"] == [1, 32, 48, 3]  # what the interpreter takes (NHWC)
    assert manifest["report"]["tflite"]["pinned"] == ["x Nx3xNxN -> 1x32x48x3"]
    assert any("dynamic dimensions pinned" in n for n in manifest["passes"][-1]["notes"])
    emitted = manifest["report"]["verification"][-1]
    assert emitted["stage"] == "emitted tflite" and emitted["samples"] == 1 and emitted["tolerance"] is not None
    assert bundle.reference()[0][0].shape == (1, 32, 48, 3)
    assert api.verify_bundle(bundle.path)["ok"]
