"""What real exporters write, on corpus models: dynamic dims that survive into ONNX bundles and verify at more
than one size, shapes taken from calibration data, an already-quantized model recognised (never quantized
twice), ``--format auto`` falling back where an explicit ``--format`` does not, and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest

from edgec import api
from edgec.examples.corpus import CORPUS
from edgec.examples.corpus_data import ocr_rec_lines
from edgec.examples.corpus_metrics import bundle_runner, ctc_decode, onnx_runner, ppocr_charset

pytestmark = pytest.mark.integration


def edgec_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgec", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def _dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.xdist_group("corpus-ppocr-rec")
def test_recogniser_width_stays_dynamic_in_the_onnx_bundle_and_reads_the_same_text(tmp_path):
    from edgec.examples.corpus import write_calibration

    model = CORPUS["ppocr-rec"]
    data = write_calibration(model, tmp_path / "rec.npz", n=2, seed=4)  # real lines to verify with (48x160)
    bundle = api.compile(model.source, tmp_path / "rec", target="host", quantize="none", calibration=str(data),
                         input_shapes={"x": [1, 3, 48, None]})  # `--input-shape x=1x3x48xN`
    graph = onnx.load(str(bundle.model_path)).graph
    width = _dims(graph.input[0])[3]
    assert not isinstance(width, int) or width <= 0, _dims(graph.input[0])
    charset, source, compiled = ppocr_charset(model.path), onnx_runner(model.path), bundle_runner(bundle)
    for size in (160, 320):  # one bundle, two widths, the same decoded characters as the source
        lines = ocr_rec_lines(3, 48, size, seed=2)
        for k in range(len(lines)):
            feed = {"x": np.ascontiguousarray(lines[k:k + 1])}
            want, got = source(feed)[0][0], compiled(feed)[0][0]
            assert got.shape == want.shape and ctc_decode(got, charset) == ctc_decode(want, charset)


@pytest.mark.xdist_group("corpus-ppocr-det")
def test_detector_shape_comes_from_calibration_data_when_none_is_given(tmp_path):
    from edgec.examples.corpus import write_calibration

    model = CORPUS["ppocr-det"]
    data = write_calibration(model, tmp_path / "det.npz", n=4, seed=3)
    bundle = api.compile(model.source, tmp_path / "det", target="host", quantize="none", calibration=str(data))
    assert bundle.inputs[0]["shape"][2:] in ([320, 320], [None, None], [-1, -1]), bundle.inputs[0]


@pytest.mark.xdist_group("corpus-ddddocr-old")
def test_already_quantized_model_is_recognised_and_not_quantized_again(tmp_path):
    model = CORPUS["ddddocr-old"]
    result = edgec_cli("compile", model.source, "--target", "host", "--quantize", "int8", "--input-shape",
                       "input1=1x1x64x256", "-o", tmp_path / "old")
    assert result.returncode == 0, result.stderr
    assert "already quantized" in result.stderr
    from edgec.bundle import Bundle

    bundle = Bundle(tmp_path / "old")
    assert bundle.manifest["report"]["quantization"]["precision"] == "already quantized"
    ops = [n.op_type for n in onnx.load(str(bundle.model_path)).graph.node]
    source_ops = [n.op_type for n in onnx.load(str(model.path)).graph.node]
    for op in ("ConvInteger", "DynamicQuantizeLinear"):
        assert ops.count(op) == source_ops.count(op) > 0
    assert "QuantizeLinear" not in ops and "QLinearConv" not in ops


@pytest.mark.slow
@pytest.mark.xdist_group("corpus-silero-vad")
def test_explicit_tflite_format_never_falls_back(tmp_path):
    model = CORPUS["silero-vad"]
    result = edgec_cli("compile", model.source, "--target", "rpi4", "--format", "tflite", "--quantize", "none",
                       "--input-shape", "input=1x576", "--input-shape", "state=2x1x128", "-o", tmp_path / "vad")
    assert result.returncode != 0 and not (tmp_path / "vad").exists()
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("edgec: error:") and "Traceback" not in result.stderr, result.stderr


@pytest.mark.xdist_group("corpus-ppocr-det")
def test_dynamic_detector_without_shape_or_data_gets_one_line_with_a_usable_example(tmp_path):
    model = CORPUS["ppocr-det"]
    result = edgec_cli("compile", model.source, "--target", "rpi4", "--format", "tflite", "-o", tmp_path / "d")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("edgec: error:") and "--input-shape" in line, line
    # A usable example: the model's fixed channel dim, a placeholder or a real size for the dynamic ones.
    assert "1x3x1x1" not in line and "x3x" in line, line
    wrong = edgec_cli("compile", model.source, "--input-shape", "image=1x3x320x320", "-o", tmp_path / "w")
    last = wrong.stderr.strip().splitlines()[-1]
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
    assert "names 'image'" in last and last.endswith("the model's inputs are x"), last  # the real ones listed
