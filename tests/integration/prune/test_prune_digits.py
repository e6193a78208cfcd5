"""Filter pruning on a digits CNN trained in the test: accuracy with and without reconstruction, and bundles."""

from __future__ import annotations

import json

import numpy as np
import onnx_ir as ir
import pytest

from edgec import api
from edgec.bundle import Bundle
from edgec.compiler.passes.prune_filters import PruneFilters
from edgec.compiler.pruning.reconstruct import capture

from .conftest import float_ir

pytestmark = pytest.mark.xdist_group("prune-digits")


def _accuracy(model: ir.Model, x: np.ndarray, y: np.ndarray) -> float:
    (logits,) = next(capture(model, [model.graph.outputs[0].name], [[x]], "test"))
    return 100.0 * float(np.mean(logits.argmax(1) == y))


@pytest.fixture(scope="module")
def pruned_pair(digits_files):
    """(float accuracy, plain-pruned accuracy, reconstructed accuracy, pass) at 30% of the filters."""
    base = float_ir(digits_files["model"])
    x_cal = digits_files["x_train"][:256]
    batches = [[x_cal[i:i + 64]] for i in range(0, len(x_cal), 64)]
    x, y = digits_files["x_test"], digits_files["y_test"]
    proto = ir.to_proto(base)
    results = {}
    for reconstruct in (False, True):
        model = ir.from_proto(proto)
        pruning = PruneFilters(0.3, batches=batches, reconstruct=reconstruct, sensitivity=False)
        pruning(model)
        results[reconstruct] = (_accuracy(model, x, y), pruning)
    return _accuracy(base, x, y), results[False][0], results[True][0], results[True][1]


def test_thirty_percent_with_reconstruction_loses_at_most_one_point(pruned_pair):
    float_acc, _, rebuilt_acc, pruning = pruned_pair
    assert float_acc > 95.0
    assert pruning.summary["removed_channels"] >= 0.29 * pruning.summary["prunable_channels"]
    assert float_acc - rebuilt_acc <= 1.0, (float_acc, rebuilt_acc)


def test_reconstruction_beats_plain_pruning(pruned_pair):
    _, plain_acc, rebuilt_acc, pruning = pruned_pair
    assert rebuilt_acc > plain_acc
    assert any(note.startswith("reconstructed") and "refit" in note for note in pruning.notes)


def test_compile_prune_onnx_bundle_meets_budget_and_is_reproducible(digits_files, tmp_path):
    options = dict(target="host", format="onnx", quantize="none", prune=0.3,
                   calibration=str(digits_files["calibration"]), eval_data=str(digits_files["eval"]),
                   max_accuracy_drop=1.0)
    first = api.compile(str(digits_files["model"]), tmp_path / "a", **options)
    second = api.compile(str(digits_files["model"]), tmp_path / "b", **options)
    report = first.manifest["report"]["compression"]
    assert report["accuracy"]["drop"] <= 1.0 and report["accuracy"]["metric"] == "top-1 accuracy"
    assert report["parameters_after"] < 0.75 * report["parameters_before"], report
    assert report["size"]["compressed_model_bytes"] < report["size"]["float_model_bytes"]
    assert first.manifest["report"]["size"]["model_bytes"] < first.manifest["report"]["size"]["float_model_bytes"]
    names = [p["name"] for p in first.manifest["passes"]]
    assert names.index("prune-filters") < names.index("emit-onnx")
    assert (first.path / "manifest.json").read_bytes() == (second.path / "manifest.json").read_bytes()
    assert (first.path / "model.onnx").read_bytes() == (second.path / "model.onnx").read_bytes()


def test_prune_then_int8_onnx(digits_files, tmp_path):
    bundle = api.compile(str(digits_files["model"]), tmp_path / "q", target="host", format="onnx", quantize="int8",
                         prune=0.3, calibration=str(digits_files["calibration"]),
                         eval_data=str(digits_files["eval"]), max_accuracy_drop=2.0)
    names = [p["name"] for p in bundle.manifest["passes"]]
    assert names.index("prune-filters") < names.index("quantize-int8")
    assert bundle.manifest["report"]["compression"]["accuracy"]["drop"] <= 2.0
    assert bundle.manifest["report"]["size"]["model_bytes"] < 0.5 * bundle.manifest["report"]["size"][
        "float_model_bytes"]


def test_sparsity_bundle_records_deflated_sizes(digits_files, tmp_path):
    bundle = api.compile(str(digits_files["model"]), tmp_path / "s", target="host", format="onnx", quantize="none",
                         sparsity=0.5, calibration=str(digits_files["calibration"]),
                         eval_data=str(digits_files["eval"]), max_accuracy_drop=5.0)
    size = bundle.manifest["report"]["compression"]["size"]
    assert bundle.manifest["report"]["compression"]["strength"] == 1.0
    # half the float32 weights zero: deflate saves a good part of the file (non-zero floats do not compress)
    assert size["compressed_model_deflated_bytes"] < 0.85 * size["float_model_deflated_bytes"], size
    notes = json.dumps([p for p in bundle.manifest["passes"] if p["name"] == "sparsify-weights"])
    assert "zeroed" in notes
    Bundle(bundle.path).check_files()
    # The bundle stores the model deflated: smaller on disk, and it still verifies and benchmarks.
    encoding = bundle.manifest["model_encoding"]
    stored = bundle.path / encoding["file"]
    assert not (bundle.path / "model.onnx").exists() and stored.is_file()
    assert stored.stat().st_size < 0.85 * encoding["size"]
    assert bundle.manifest["report"]["size"]["stored_model_bytes"] == stored.stat().st_size
    assert api.verify_bundle(bundle.path)["ok"]
    doc = api.bench(bundle.path, runs=5, warmup=1, power="none", idle_s=0).result
    assert doc["bundle_id"] == bundle.bundle_id and doc["latency_ms"]["count"] == 5


def test_a_damaged_compressed_model_is_refused(tmp_path):
    import zlib

    from edgec.bundle import inflate_model, sha256_bytes
    from edgec.errors import BundleError

    raw = b"onnx-bytes" * 100
    stored = tmp_path / "model.onnx.zlib"
    stored.write_bytes(zlib.compress(raw))
    encoding = {"codec": "zlib", "file": stored.name, "sha256": sha256_bytes(raw + b"x"), "size": len(raw)}
    with pytest.raises(BundleError, match="does not match its sha256"):
        inflate_model(stored.read_bytes(), encoding, "model.onnx")
    stored.write_bytes(b"not zlib at all")
    with pytest.raises(BundleError, match="cannot inflate"):
        inflate_model(stored.read_bytes(), {**encoding, "sha256": sha256_bytes(raw)}, "model.onnx")


def test_guard_backs_off_when_the_budget_is_tight(digits_files, tmp_path):
    bundle = api.compile(str(digits_files["model"]), tmp_path / "g", target="host", format="onnx", quantize="none",
                         prune=0.8, calibration=str(digits_files["calibration"]),
                         eval_data=str(digits_files["eval"]), max_accuracy_drop=0.5)
    report = bundle.manifest["report"]["compression"]
    assert report["strength"] < 1.0 and report["accuracy"]["drop"] <= 0.5
    assert any("over the 0.5-point budget" in n for n in report["notes"])


def test_prune_rules_file_sets_per_layer_ratios(digits_files, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('default = 0.0\n[[rule]]\nmatch = "/features/features.0/*"\nratio = 0.5\n')
    bundle = api.compile(str(digits_files["model"]), tmp_path / "r", target="host", format="onnx", quantize="none",
                         prune_rules=str(rules), calibration=str(digits_files["calibration"]),
                         eval_data=str(digits_files["eval"]), max_accuracy_drop=2.0)
    groups = {row["group"]: (row["kept"], row["channels"])
              for row in bundle.manifest["report"]["compression"]["pruning"]["groups"]}
    assert groups.pop("/features/features.0/Conv") == (8, 16)
    assert all(kept == channels for kept, channels in groups.values())
