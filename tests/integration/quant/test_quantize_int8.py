"""INT8 static QDQ on a CNN trained on scikit-learn's digits: accuracy, size, report, reproducibility."""

from __future__ import annotations

import json
import re

import pytest

from edgec import api

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("quant-cnn")]


@pytest.fixture(scope="module")
def int8_bundle(digits_cnn_trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "cnn.bundle"
    return api.compile(str(digits_cnn_trained.model_file), out, target="host", quantize="int8",
                       calibration=str(digits_cnn_trained.calibration), eval_data=str(digits_cnn_trained.eval_data))


def test_int8_cnn_keeps_accuracy_within_half_a_point(int8_bundle, digits_cnn_trained, bundle_accuracy):
    accuracy = bundle_accuracy(int8_bundle, digits_cnn_trained.x_test, digits_cnn_trained.y_test)
    assert digits_cnn_trained.float_accuracy > 90.0
    assert digits_cnn_trained.float_accuracy - accuracy <= 0.5
    report = int8_bundle.manifest["report"]["accuracy"]
    assert report["metric"] == "top-1 accuracy" and report["drop"] <= 0.5


def test_int8_cnn_is_at_most_0_31x_the_float_size(int8_bundle):
    # 0.30x before Relu/Clip were kept as ops (quantize_int8.KEEP_ACTIVATIONS): their Q/DQ pairs cost ~0.2 kB on
    # this 79 kB model; onnxruntime fuses them away at load time where that is exact.
    size = int8_bundle.manifest["report"]["size"]
    assert size["model_bytes"] <= 0.31 * size["float_model_bytes"]


def test_int8_report_lists_every_quantizable_node(int8_bundle):
    import onnx

    quant = int8_bundle.manifest["report"]["quantization"]
    assert quant["precision"] == "int8" and quant["settings"]["per_channel"] is True
    rows = {row["node"]: row for row in quant["nodes"]}
    weighted = [row for row in rows.values() if row["op"] in ("Conv", "Gemm")]
    assert len(weighted) == 4
    assert all(row["precision"] == "int8" and row["sensitivity"] is not None and row["reason"] for row in weighted)
    ops = [n.op_type for n in onnx.load(str(int8_bundle.model_path)).graph.node]
    assert ops.count("QuantizeLinear") >= 1 and ops.count("DequantizeLinear") >= 4
    names = [p["name"] for p in int8_bundle.manifest["passes"]]
    assert {"quantize-int8", "accuracy-guard"} <= set(names)
    # Equalization is measured with and without, and kept or undone: the report says which and why.
    assert re.search(r"equalization \w+, bias correction \w+ \(profile\) (kept|undone|partly undone)", json.dumps(int8_bundle.manifest))


def test_same_inputs_give_a_byte_identical_bundle(int8_bundle, digits_cnn_trained, tmp_path):
    again = api.compile(str(digits_cnn_trained.model_file), tmp_path / "again.bundle", target="host",
                        quantize="int8", calibration=str(digits_cnn_trained.calibration),
                        eval_data=str(digits_cnn_trained.eval_data))
    first = {p.relative_to(int8_bundle.path): p.read_bytes() for p in int8_bundle.path.rglob("*")
             if p.is_file() and "logs" not in p.parts}
    second = {p.relative_to(again.path): p.read_bytes() for p in again.path.rglob("*")
              if p.is_file() and "logs" not in p.parts}
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []
