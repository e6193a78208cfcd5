"""INT4 weight-only (MatMulNBits) on an MLP trained on digits: Gemm rewritten, accuracy and size kept."""

from __future__ import annotations

import pytest

from edgec import api

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("quant-mlp")]


@pytest.fixture(scope="module")
def int4_bundle(digits_mlp_trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("int4") / "mlp.bundle"
    return api.compile(str(digits_mlp_trained.model_file), out, target="host", quantize="int4",
                       eval_data=str(digits_mlp_trained.eval_data))


def test_int4_mlp_loses_at_most_one_point(int4_bundle, digits_mlp_trained, bundle_accuracy):
    accuracy = bundle_accuracy(int4_bundle, digits_mlp_trained.x_test, digits_mlp_trained.y_test)
    assert digits_mlp_trained.float_accuracy > 90.0
    assert digits_mlp_trained.float_accuracy - accuracy <= 1.0


def test_int4_mlp_is_at_most_0_2x_the_float_size(int4_bundle):
    size = int4_bundle.manifest["report"]["size"]
    assert size["model_bytes"] <= 0.2 * size["float_model_bytes"]


def test_every_linear_layer_became_matmulnbits(int4_bundle):
    import onnx

    ops = [n.op_type for n in onnx.load(str(int4_bundle.model_path)).graph.node]
    assert ops.count("MatMulNBits") == 3 and "Gemm" not in ops
    notes = {p["name"]: p["notes"] for p in int4_bundle.manifest["passes"]}
    assert notes["rewrite-gemm"] == ["rewrote 3 Gemm into MatMul+Add"]
    assert "3 of 3 weight tensors became int4" in notes["quantize-int4"][0]
    rows = int4_bundle.manifest["report"]["quantization"]["nodes"]
    assert sorted(r["precision"] for r in rows if r["op"] == "MatMul") == ["int4"] * 3
