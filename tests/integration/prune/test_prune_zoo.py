"""Filter pruning on the model-zoo graph structures the installed ``onnx`` package ships (weights are fills).

Graph validity only: every pruned graph passes the full ONNX checker, runs in onnxruntime with the original output
shape, and converts to TFLite through edgec's emitter (a failure there fails the test: no graph is a known
limitation). ShuffleNet's channel shuffles and grouped convs leave nothing safely prunable: the test checks that it
is left alone with the reasons in the notes.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from edgec import api
from edgec.compiler.passes.prune_filters import PruneFilters
from edgec.compiler.pruning.reconstruct import capture

from .conftest import float_ir

pytestmark = pytest.mark.xdist_group("prune-zoo")

ZOO = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
GRAPHS = ["resnet50", "squeezenet", "shufflenet", "densenet121", "inception_v1", "inception_v2"]


@pytest.fixture(scope="module")
def pruned_zoo(tmp_path_factory):
    """name -> (pruned .onnx path, pass, float output shape, pruned output shape)."""
    work = tmp_path_factory.mktemp("zoo")
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    result = {}
    for name in GRAPHS:
        model = float_ir(os.path.join(ZOO, f"light_{name}.onnx"))
        (want,) = next(capture(model, [model.graph.outputs[0].name], [[x]], name))
        pruning = PruneFilters(0.3, reconstruct=False, sensitivity=False, residual=True)  # every group: validity
        pruning(model)
        path = work / f"{name}_pruned.onnx"
        onnx.save(ir.to_proto(model), str(path))
        (got,) = next(capture(model, [model.graph.outputs[0].name], [[x]], name))
        result[name] = (path, pruning, want.shape, got.shape)
    return result


@pytest.mark.parametrize("name", GRAPHS)
def test_pruned_zoo_graph_is_valid_and_runs(pruned_zoo, name):
    path, pruning, want, got = pruned_zoo[name]
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert got == want
    if name == "shufflenet":
        assert pruning.summary == {}
        assert any("is grouped" in note for note in pruning.notes)
    else:
        removed = pruning.summary["removed_channels"] / pruning.summary["prunable_channels"]
        assert 0.25 <= removed <= 0.35, removed
    if name == "inception_v1":
        assert any("LRN" in note and note.startswith("kept group") for note in pruning.notes)


# onnx2tf needs minutes for the 25-100 MB graphs on a loaded 2-core machine (resnet50 ~9 min, densenet121 ~3 min,
# measured converting fine); they run with EDGEC_PRUNE_ZOO_TFLITE=all.
HEAVY = {"resnet50", "densenet121", "inception_v2"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in GRAPHS])
def test_pruned_zoo_graph_converts_to_tflite(pruned_zoo, name, tmp_path):
    if name in HEAVY and os.environ.get("EDGEC_PRUNE_ZOO_TFLITE") != "all":
        pytest.skip("large zoo graph: set EDGEC_PRUNE_ZOO_TFLITE=all to convert it (minutes)")
    path = pruned_zoo[name][0]
    # No known limitation: the catch-all xfail this replaced hid nothing (shufflenet, squeezenet and inception_v1
    # convert; the heavy three were measured converting). A graph that stops converting fails here.
    bundle = api.compile(str(path), tmp_path / name, target="host", format="tflite", quantize="none")
    assert bundle.model_path.suffix == ".tflite" and bundle.model_path.stat().st_size > 0
    stage = next(c for c in bundle.manifest["report"]["verification"] if c["stage"] == "emitted tflite")
    assert stage["max_rel_diff"] <= 1e-4


def test_reconstruction_runs_through_fire_modules():
    """SqueezeNet's fire modules (1x1 and 3x3 branches joined by Concat): every consumer gets refitted."""
    model = float_ir(os.path.join(ZOO, "light_squeezenet.onnx"))
    x = np.random.default_rng(1).standard_normal((2, 1, 3, 224, 224)).astype(np.float32)
    pruning = PruneFilters(0.3, batches=[[x[0]], [x[1]]], sensitivity=False)
    pruning(model)
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    refits = [n for n in pruning.notes if n.startswith("reconstructed")]
    assert len(refits) == 25 and all("rows x" in n for n in refits)
    (out,) = next(capture(model, [model.graph.outputs[0].name], [[x[0]]], "squeezenet"))
    assert out.shape == (1, 1000, 1, 1) and np.isfinite(out).all()
