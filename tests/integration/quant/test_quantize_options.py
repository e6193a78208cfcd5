"""--quantize modes and bad input end to end: clear one-line errors with nothing written; tflite deferral; fp16;
auto; image-directory and file.py:function calibration through a full compile."""

from __future__ import annotations

import numpy as np
import pytest

from edgec import api
from edgec.errors import CalibrationDataError, UsageError

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("quant-small")]

NETS = '''
import numpy as np
import torch
from torch import nn


def convnet():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)).eval()


def samples():
    rng = np.random.default_rng(0)
    for _ in range(20):
        yield {"input": rng.standard_normal((3, 8, 8)).astype(np.float32)}
'''
SHAPES = {"input": [1, 3, 8, 8]}


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quant-nets")
    (folder / "nets.py").write_text(NETS)
    rng = np.random.default_rng(0)
    np.savez(folder / "calib.npz", input=rng.standard_normal((24, 3, 8, 8)).astype(np.float32))
    return folder


def _compile(nets, out, **options):
    return api.compile(f"{nets / 'nets.py'}:convnet", out, input_shapes=SHAPES, **options)


@pytest.mark.parametrize("options, error, words", [
    ({"quantize": "int4", "target": "x86-avx512-vnni"}, UsageError,
     ["no MatMul/Gemm weight", "use --quantize int8"]),
    ({"quantize": "fp16", "target": "x86-avx512-vnni"}, UsageError, ["quantization.fp16_arithmetic = false"]),
    ({"quantize": "int4", "target": "android-arm64", "format": "onnx"}, UsageError,
     ["quantization.supported", "android-arm64"]),
    ({"quantize": "int8", "target": "x86-avx512-vnni"}, UsageError, ["needs calibration data"]),
    ({"quantize": "int8", "target": "x86-avx512-vnni", "calibration": "EVAL_BAD"}, CalibrationDataError,
     ["'labels' has 3 entries for 24 samples"]),
    ({"quantize": "int8", "target": "x86-avx512-vnni", "calibration": "WRONG_NAME"}, CalibrationDataError,
     ["no array for model input 'input'", "arrays present: x, y"]),
])
def test_bad_input_is_one_clear_line_and_nothing_is_written(nets, tmp_path, options, error, words):
    if options.get("calibration") == "EVAL_BAD":
        np.savez(tmp_path / "bad.npz", input=np.zeros((24, 3, 8, 8), np.float32), labels=np.zeros(3, np.int64))
        options = {**options, "calibration": str(tmp_path / "bad.npz")}
    if options.get("calibration") == "WRONG_NAME":
        np.savez(tmp_path / "named.npz", x=np.zeros((24, 3, 8, 8), np.float32), y=np.zeros((24, 3, 8, 8), np.float32))
        options = {**options, "calibration": str(tmp_path / "named.npz")}
    out = tmp_path / "out.bundle"
    with pytest.raises(error) as caught:
        _compile(nets, out, **options)
    assert "\n" not in str(caught.value)
    for word in words:
        assert word in str(caught.value)
    assert not out.exists() and list(tmp_path.glob("*.bundle*")) == []


def test_eval_labels_of_the_wrong_length_are_refused(nets, tmp_path):
    np.savez(tmp_path / "eval.npz", input=np.zeros((10, 3, 8, 8), np.float32), labels=np.zeros(9, np.int64))
    with pytest.raises(CalibrationDataError, match="'labels' has 9 entries for 10 samples"):
        _compile(nets, tmp_path / "out.bundle", quantize="int8", target="x86-avx512-vnni",
                 calibration=str(nets / "calib.npz"), eval_data=str(tmp_path / "eval.npz"))
    assert not (tmp_path / "out.bundle").exists()


def test_tflite_gets_the_precision_and_calibration_not_a_qdq_model(nets):
    from edgec import ir as edgec_ir
    from edgec.compiler.calibration import CalibrationSet
    from edgec.compiler.frontends import lower
    from edgec.compiler.options import CompileOptions
    from edgec.compiler.stages import quantize
    from edgec.compiler.state import CompileState
    from edgec.targets import load_profile

    source = lower(f"{nets / 'nets.py'}:convnet", SHAPES)
    options = CompileOptions(target="rpi4", format="tflite", quantize="int8", calibration=str(nets / "calib.npz"))
    context = CompileState(options, load_profile("rpi4"), "tflite", edgec_ir.io_signature(source.model, source.layouts))
    before = edgec_ir.to_proto(source.model).SerializeToString()
    model, records = quantize.apply(source.model, source, load_profile("rpi4"), options, context)
    assert context.precision == "int8" and isinstance(context.calibration, CalibrationSet)
    assert len(context.calibration) == 24 and not context.quantized
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph)
    assert edgec_ir.to_proto(model).SerializeToString() == before
    assert records[0]["name"] == "quantize-deferred" and "tflite emitter" in context.report["quantization"]["note"]


def test_the_stage_quantizes_for_the_format_the_pipeline_chose_not_the_profiles(nets):
    """The pipeline may choose ONNX for a TFLite-first profile (measured tables, a fallback); the stage used to
    recompute ``options.format or profile.runtime.format`` and deferred to a TFLite emitter that never ran."""
    from edgec import ir as edgec_ir
    from edgec.compiler.frontends import lower
    from edgec.compiler.options import CompileOptions
    from edgec.compiler.stages import quantize
    from edgec.compiler.state import CompileState
    from edgec.targets import load_profile

    source = lower(f"{nets / 'nets.py'}:convnet", SHAPES)
    options = CompileOptions(target="rpi4", quantize="int8", calibration=str(nets / "calib.npz"))
    context = CompileState(options, load_profile("rpi4"), "onnx", edgec_ir.io_signature(source.model, source.layouts))
    model, records = quantize.apply(source.model, source, load_profile("rpi4"), options, context)
    assert load_profile("rpi4").runtime.format == "tflite"
    assert context.quantized and "quantize-deferred" not in [r["name"] for r in records]
    assert any(n.op_type == "DequantizeLinear" for n in model.graph)


def test_fp16_where_the_profile_has_fp16_arithmetic(nets, tmp_path):
    import onnx

    bundle = _compile(nets, tmp_path / "fp16.bundle", quantize="fp16", target="jetson-orin-nano", format="onnx",
                      calibration=str(nets / "calib.npz"))
    model = onnx.load(str(bundle.model_path))
    assert {t.data_type for t in model.graph.initializer if t.dims} == {onnx.TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert bundle.manifest["report"]["accuracy"]["rel_error"] < 0.01
    assert api.verify_bundle(bundle.path)["ok"]


def test_auto_keeps_a_tiny_net_in_float_and_says_why(nets, tmp_path):
    bundle = _compile(nets, tmp_path / "auto.bundle", quantize="auto", target="host",
                      calibration=str(nets / "calib.npz"))
    quant = bundle.manifest["report"]["quantization"]
    assert quant["precision"] == "none" and "quantization.auto_min_macs" in quant["reason"]


@pytest.mark.parametrize("kind", ["images", "function"])
def test_image_directory_and_function_calibration_compile_to_int8(nets, tmp_path, kind):
    from PIL import Image

    if kind == "images":
        folder = tmp_path / "images"
        folder.mkdir()
        rng = np.random.default_rng(1)
        for k in range(20):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{k:02d}.png")
        options = {"calibration": str(folder), "preprocess": "resize=8,mean=0.5:0.5:0.5,std=0.25:0.25:0.25"}
    else:
        options = {"calibration": f"{nets / 'nets.py'}:samples"}
    bundle = _compile(nets, tmp_path / "q.bundle", quantize="int8", target="host", **options)
    quant = bundle.manifest["report"]["quantization"]
    assert quant["precision"] == "int8"
    assert [r["precision"] for r in quant["nodes"] if r["op"] == "Conv"] == ["int8", "int8"]
    accuracy = bundle.manifest["report"]["accuracy"]
    assert accuracy["metric"].startswith("cosine") and accuracy["samples"] == 10 and accuracy["cosine"] > 0.99


def test_cli_quantizes_and_refuses_with_one_line(nets, tmp_path):
    import json

    from tests.conftest import run_cli

    spec = f"{nets / 'nets.py'}:convnet"
    out = tmp_path / "cli.bundle"
    code, stdout, stderr = run_cli(["compile", spec, "-t", "x86-avx512-vnni", "--input-shape", "input=1x3x8x8",
                                    "--quantize", "int8", "--calibration", str(nets / "calib.npz"),
                                    "--calibration-method", "mse", "-o", str(out), "--json"])
    assert code == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["report"]["quantization"]["settings"]["calibration_method"] == "mse"
    assert json.loads(stdout)["path"] == str(out)
    code, _, stderr = run_cli(["compile", spec, "-t", "x86-avx512-vnni", "--input-shape", "input=1x3x8x8",
                               "--quantize", "fp16", "-o", str(tmp_path / "no.bundle")])
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "quantization.fp16_arithmetic" in lines[0]
    assert not (tmp_path / "no.bundle").exists()


def test_a_pytorch_factory_takes_its_input_shapes_from_the_calibration_npz(nets, tmp_path):
    bundle = api.compile(f"{nets / 'nets.py'}:convnet", tmp_path / "b", target="x86-avx512-vnni", quantize="none",
                         calibration=str(nets / "calib.npz"))
    assert bundle.reference()[0][0].shape == (1, 3, 8, 8)
    assert "calibration samples" in bundle.manifest["report"]["verification_inputs"]["source"]
