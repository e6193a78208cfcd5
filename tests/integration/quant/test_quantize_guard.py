"""The accuracy guard returns deliberately sensitive layers to float, and fails with the table when it cannot.

A junk input feature spanning 0..1000 (ignored by the network: zero weights) stretches the per-tensor uint8 range
of a layer's input so far that the real [0, 1] features all round to zero: quantizing that layer ruins accuracy.
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest

from edgec import api
from edgec.errors import AccuracyBudgetError

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("quant-mlp")]


def _with_junk_feature(model, propagate: bool):
    """The trained MLP with a 65th input feature that it ignores; ``propagate`` carries it through every layer."""
    import torch

    model = copy.deepcopy(model)
    first, middle, last = model[0], model[2], model[4]
    wide = torch.nn.Linear(65, first.out_features)
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[:, :64] = first.weight
        wide.bias.copy_(first.bias)
        if propagate:  # hidden channel 0 of each layer carries the junk; the next layer ignores it except ch. 0
            wide.weight[0] = 0.0
            wide.weight[0, 64] = 1.0
            wide.bias[0] = 0.0
            middle.weight[:, 0] = 0.0
            middle.weight[0] = 0.0
            middle.weight[0, 0] = 1.0
            middle.bias[0] = 0.0
            last.weight[:, 0] = 0.0
    model[0] = wide
    return model.eval()


def _save(tmp, model, name: str, x_calib, x_test, y_test):
    import torch

    from edgec.examples.data import write_npz

    path = tmp / f"{name}.pt2"
    torch.export.save(torch.export.export(model, (torch.from_numpy(x_calib[:1]),)), path)
    return (path, write_npz(tmp / f"{name}-calib.npz", {"input": x_calib}),
            write_npz(tmp / f"{name}-eval.npz", {"input": x_test}, y_test))


@pytest.fixture(scope="module")
def junk_data(digits_mlp_trained):
    from edgec.examples.data import digits

    (x_train, _), _ = digits("flat")
    rng = np.random.default_rng(0)

    def widen(x):
        return np.concatenate([x, rng.uniform(0, 1000, (len(x), 1)).astype(np.float32)], axis=1)

    return widen(x_train[:128]), widen(digits_mlp_trained.x_test), digits_mlp_trained.y_test


def test_guard_returns_the_sensitive_layer_to_float(digits_mlp_trained, junk_data, tmp_path):
    model = _with_junk_feature(digits_mlp_trained.model, propagate=False)
    source, calib, eval_data = _save(tmp_path, model, "junk", *junk_data)
    bundle = api.compile(str(source), tmp_path / "out.bundle", target="host", quantize="int8",
                         calibration=str(calib), eval_data=str(eval_data), calibration_method="minmax",
                         max_accuracy_drop=1.0)
    accuracy = bundle.manifest["report"]["accuracy"]
    assert accuracy["drop"] <= 1.0
    assert accuracy["tried"][0]["drop"] > 20.0  # everything in int8: the junk range ruins the first layer
    rows = {r["node"]: r for r in bundle.manifest["report"]["quantization"]["nodes"] if r["op"] == "Gemm"}
    first = next(name for name in rows if name == accuracy["returned_to_float"][0])
    assert rows[first]["precision"] == "float32" and "accuracy guard" in rows[first]["reason"]
    assert rows[first]["sensitivity"]["drop"] > 20.0
    assert len(accuracy["returned_to_float"]) == 1
    assert sum(r["precision"] == "int8" for r in rows.values()) == 2


def test_guard_fails_with_the_table_when_no_fallback_meets_the_budget(digits_mlp_trained, junk_data, tmp_path):
    model = _with_junk_feature(digits_mlp_trained.model, propagate=True)
    source, calib, eval_data = _save(tmp_path, model, "junk-all", *junk_data)
    out = tmp_path / "out.bundle"
    with pytest.raises(AccuracyBudgetError) as caught:
        api.compile(str(source), out, target="host", quantize="int8", calibration=str(calib),
                    eval_data=str(eval_data), calibration_method="minmax", max_accuracy_drop=1.0)
    message = str(caught.value)
    assert "\n" not in message and "--max-accuracy-drop 1" in message and "all layers quantized" in message
    assert "95% interval [" in message  # a refusal shows the evidence
    table = caught.value.table
    assert table[0]["change"] == "all layers quantized" and table[-1]["verdict"] == "exceeds"
    # All candidates but one (3 layers and the Relu op type): the predicted set went straight there.
    floated, candidates = map(int, re.search(r"with (\d+) of (\d+) layers back in float", message).groups())
    assert floated == candidates - 1 and table[-1]["change"].startswith(f"{floated} layers in float")
    assert table[-1]["interval"][0] > 1.0
    assert not out.exists()


def test_the_guard_measures_the_quantized_arithmetic_not_this_machines_int8_kernels():
    """Fused into QLinearConv, onnxruntime's u8s8 kernels on an x86 CPU without VNNI (VPMADDUBSW) saturate int16
    sums of two products: activations near 255 times weights near +-127 (the first Conv of a net fed standard
    normal data, zero point ~128, saturated 4% of its pairs). The guard then measured a drop the target (VNNI,
    ARM dot product, reduce_range) never has and put that layer back to float, on some CI machines only. The
    guard runs the QDQ graph unfused: exactly DequantizeLinear -> float Conv -> QuantizeLinear, on any CPU."""
    from onnx import TensorProto, helper, numpy_helper

    from edgec.compiler.stages.quantize_guard import _runner

    rng = np.random.default_rng(0)
    q_weights = np.where(rng.random((4, 8, 1, 1)) < 0.5, -127, 127).astype(np.int8)
    w_scale, x_scale, y_scale = np.float32(0.01), np.float32(0.02), np.float32(0.5)
    init = [numpy_helper.from_array(q_weights, "wq"), numpy_helper.from_array(w_scale, "ws"),
            numpy_helper.from_array(x_scale, "xs"), numpy_helper.from_array(np.uint8(128), "xz"),
            numpy_helper.from_array(y_scale, "ys"), numpy_helper.from_array(np.uint8(128), "yz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"]),
             helper.make_node("Conv", ["xd", "wd"], ["y"]),
             helper.make_node("QuantizeLinear", ["y", "ys", "yz"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["out"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 4, 4])], init)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = (rng.integers(120, 128, (1, 8, 4, 4)) * x_scale).astype(np.float32)  # quantized to 248..255
    xq = np.clip(np.round(x / x_scale) + 128, 0, 255) - 128
    y = np.einsum("oc,nchw->nohw", q_weights[:, :, 0, 0].astype(np.float64) * w_scale, xq * x_scale)
    want = (np.clip(np.round(y / y_scale) + 128, 0, 255) - 128) * y_scale
    raw = (xq + 128)[0].reshape(8, -1)  # what u8s8 kernels multiply: the uint8 codes
    weights = q_weights[:, :, 0, 0].astype(np.int64)[..., None]
    pairs = raw[0::2][None] * weights[:, 0::2] + raw[1::2][None] * weights[:, 1::2]
    assert np.abs(pairs).max() > 32767  # these sums saturate in int16 on a CPU without VNNI
    np.testing.assert_allclose(_runner(proto, 1)([x])[0], want, atol=1e-6)


def test_auto_format_falls_back_to_onnx_when_tflite_int8_cannot_meet_the_budget(digits_mlp_trained, junk_data,
                                                                                  tmp_path):
    """rpi4's TFLite int8 has int8 model input: the junk feature stretches the input's own quantization range, so
    no op kept in float by the TFLite guard undoes the rounding of the real features. ``--format auto`` then falls
    back to onnxruntime (rpi4 runs both), whose float input lets its guard return the one sensitive layer to
    float; an explicit ``--format tflite`` still refuses."""
    model = _with_junk_feature(digits_mlp_trained.model, propagate=False)
    source, calib, eval_data = _save(tmp_path, model, "junk-rpi4", *junk_data)
    options = {"target": "rpi4", "quantize": "int8", "calibration": str(calib), "eval_data": str(eval_data),
               "calibration_method": "minmax", "max_accuracy_drop": 1.0}
    bundle = api.compile(str(source), tmp_path / "auto", **options)
    fallback = bundle.manifest["report"]["format"]["fallback"]
    assert bundle.format == "onnx" and fallback["from"] == "tflite" and "TFLite int8 over" in fallback["reason"]
    assert bundle.manifest["report"]["accuracy"]["drop"] <= 1.0
    with pytest.raises(AccuracyBudgetError):
        api.compile(str(source), tmp_path / "explicit", format="tflite", **options)
