"""Filter pruning on a MobileNetV2-style CNN: residual adds, depthwise convs, ReLU6, global pooling, Gemm head."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from edgec import api
from edgec.bundle import Bundle, check_reference
from edgec.compiler.passes.prune_filters import PruneFilters
from edgec.compiler.pruning.reconstruct import capture
from edgec.runtimes import runtime_for_format
from edgec.targets.model_stats import analyse

from .conftest import float_ir

pytestmark = pytest.mark.xdist_group("prune-mobilenet")


@pytest.fixture(scope="module")
def pruned(mobilenet_files):
    base = float_ir(mobilenet_files["model"])
    x = mobilenet_files["x"]
    batches = [[x[i:i + 16]] for i in range(0, 32, 16)]
    model = ir.from_proto(ir.to_proto(base))
    # random weights: many channels carry no signal, so removal costs are all ~0 and every group looks equally
    # insensitive; L1 ranking keeps the sensitivity spread measurable here (trained nets: test_prune_recover);
    # residual streams are pruned too here, so the residual adds stay consistent under test
    pruning = PruneFilters(0.3, batches=batches, channel_multiple=4, selection="l1", residual=True, spread="channels")
    pruning(model)
    return base, model, pruning


def _flops(model: ir.Model) -> float:
    return sum(node.flops for node in analyse(ir.to_proto(model)).nodes)


def test_pruned_mobilenet_is_valid_smaller_and_close(pruned, mobilenet_files):
    base, model, pruning = pruned
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    x = mobilenet_files["x"][32:]
    (want,) = next(capture(base, [base.graph.outputs[0].name], [[x]], "float"))
    (got,) = next(capture(model, [model.graph.outputs[0].name], [[x]], "pruned"))
    assert got.shape == want.shape
    rel = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    assert rel < 0.2, rel
    assert _flops(model) < 0.75 * _flops(base)
    summary = pruning.summary
    assert 0.25 <= summary["removed_channels"] / summary["prunable_channels"] <= 0.35
    ratios = [row["ratio"] for row in summary["groups"]]
    assert max(ratios) > min(ratios)  # sensitivity spread the ratio over the layers


def test_residual_and_depthwise_channels_stay_consistent(pruned):
    _, model, _ = pruned
    adds = [n for n in model.graph if n.op_type == "Add" and all(v.const_value is None for v in n.inputs)]
    assert adds, "tiny_mobilenet has residual adds"
    for node in adds:
        assert node.inputs[0].shape[1] == node.inputs[1].shape[1]
    depthwise = [n for n in model.graph if n.op_type == "Conv" and n.attributes.get_int("group", 1) > 1]
    assert depthwise
    for node in depthwise:
        assert node.attributes.get_int("group") == node.inputs[1].const_value.shape[0] == node.inputs[0].shape[1]
    widths = {n.inputs[1].const_value.shape[0] for n in depthwise}
    assert any(w % 4 for w in widths) is False  # kept counts follow the SIMD multiple


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_prune_int8_bundle_in_both_formats(mobilenet_files, tmp_path, fmt):
    bundle = api.compile(str(mobilenet_files["model"]), tmp_path / fmt, target="host", format=fmt,
                         quantize="int8", prune=0.3, calibration=str(mobilenet_files["calibration"]),
                         max_accuracy_drop=10.0)
    report = bundle.manifest["report"]["compression"]
    assert report["parameters_after"] < 0.8 * report["parameters_before"]
    reopened = Bundle(bundle.path)
    reopened.check_files()
    runtime = runtime_for_format(fmt)
    module = __import__(f"edgec.runtimes.{runtime}", fromlist=["load"])
    session = module.load(reopened.model_path)
    inputs, _ = reopened.reference()
    assert all(r["ok"] for r in check_reference(reopened, session.run(inputs)))


def test_reconstruction_and_sensitivity_on_a_trained_depthwise_net(trained_mobilenet):
    """30% of a tiny trained MobileNet's filters, residual streams included: plain pruning wrecks it,
    reconstruction recovers most of it."""
    base = float_ir(trained_mobilenet["model"])
    x, y = trained_mobilenet["x_test"], trained_mobilenet["y_test"]
    batches = [[trained_mobilenet["x_train"][i:i + 64]] for i in range(0, 256, 64)]

    def accuracy(model):
        (logits,) = next(capture(model, [model.graph.outputs[0].name], [[x]], "test"))
        return 100.0 * float(np.mean(logits.argmax(1) == y))

    proto = ir.to_proto(base)
    scores = {}
    for reconstruct, sensitivity in ((False, False), (True, False), (True, True)):
        model = ir.from_proto(proto)
        PruneFilters(0.3, batches=batches, reconstruct=reconstruct, sensitivity=sensitivity,
                     channel_multiple=4, residual=True, spread="channels")(model)
        scores[reconstruct, sensitivity] = accuracy(model)
    float_score = accuracy(base)
    assert float_score > 90.0
    assert scores[True, False] > scores[False, False] + 20.0, scores
    assert scores[True, True] > scores[True, False], scores  # sensitivity spares the narrow early layers
    assert float_score - scores[True, True] < 10.0, (float_score, scores)
