"""The bundle contract: atomic writes, hashes, tamper detection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgec.bundle import MANIFEST_NAME, SCHEMA_VERSION, Bundle, manifest_bytes, sha256_file, write_atomically
from edgec.errors import BundleError, UsageError

pytestmark = pytest.mark.unit


def _fill(directory):
    (directory / "model.onnx").write_bytes(b"model-bytes")
    (directory / "reference").mkdir()
    np.savez(directory / "reference" / "inputs.npz", i0=np.ones((1, 2), np.float32))
    np.savez(directory / "reference" / "outputs.npz", o0=np.full((1, 2), 2.0, np.float32))
    files = {rel: {"sha256": sha256_file(directory / rel), "size": (directory / rel).stat().st_size}
             for rel in ("model.onnx", "reference/inputs.npz", "reference/outputs.npz")}
    manifest = {"schema_version": SCHEMA_VERSION, "format": "onnx", "model_file": "model.onnx",
                "io": {"inputs": [{"name": "x"}], "outputs": [{"name": "y"}]}, "files": files,
                "reference": {"inputs": "reference/inputs.npz", "outputs": "reference/outputs.npz",
                              "rtol": 1e-3, "atol": 1e-5}}
    (directory / MANIFEST_NAME).write_bytes(manifest_bytes(manifest))


def test_written_bundle_checks_clean(tmp_path):
    bundle = Bundle(write_atomically(tmp_path / "b", _fill))
    bundle.check_files()
    inputs, outputs = bundle.reference()
    assert inputs[0].shape == (1, 2) and float(outputs[0][0, 0]) == 2.0
    assert len(bundle.bundle_id) == 64


def test_existing_output_is_refused_unless_forced(tmp_path):
    write_atomically(tmp_path / "b", _fill)
    with pytest.raises(UsageError, match=r"already exists.*--force"):
        write_atomically(tmp_path / "b", _fill)
    write_atomically(tmp_path / "b", _fill, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_interrupted_write_leaves_nothing(tmp_path):
    def broken(directory):
        (directory / "model.onnx").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(tmp_path / "b", broken)
    assert list(tmp_path.iterdir()) == []


def test_failed_forced_rewrite_keeps_the_old_bundle(tmp_path):
    write_atomically(tmp_path / "b", _fill)
    old_id = Bundle(tmp_path / "b").bundle_id

    def broken(directory):
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError):
        write_atomically(tmp_path / "b", broken, force=True)
    assert Bundle(tmp_path / "b").bundle_id == old_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_tampered_missing_and_extra_files_are_named(tmp_path):
    path = write_atomically(tmp_path / "b", _fill)
    (path / "model.onnx").write_bytes(b"model-bytez")
    with pytest.raises(BundleError, match=r"model\.onnx: sha256 does not match"):
        Bundle(path).check_files()
    (path / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx: listed in the manifest but missing"):
        Bundle(path).check_files()
    _fill_again = write_atomically(tmp_path / "c", _fill)
    (_fill_again / "payload.py").write_text("print('hi')")
    with pytest.raises(BundleError, match=r"payload\.py: not listed"):
        Bundle(_fill_again).check_files()


def test_other_schema_and_broken_manifest(tmp_path):
    path = write_atomically(tmp_path / "b", _fill)
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    manifest["schema_version"] = 99
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema_version 99"):
        Bundle(path)
    (path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle(path)
    with pytest.raises(BundleError, match="not a bundle directory"):
        Bundle(tmp_path / "nothing")


def test_the_reference_check_is_edgec_compare_with_the_manifests_tolerances(tmp_path):
    from edgec.bundle import check_reference

    bundle = Bundle(write_atomically(tmp_path / "b", _fill))  # reference y = [[2, 2]], rtol 1e-3, atol 1e-5
    assert [r["ok"] for r in check_reference(bundle, [np.array([[2.001, 2.0]])])] == [True]
    bad = check_reference(bundle, [np.array([[2.01, 2.0]])])[0]
    assert bad["name"] == "y" and not bad["ok"] and bad["worst"] > 4
    shape = check_reference(bundle, [np.zeros((2, 1))])[0]
    assert not shape["ok"] and shape["max_abs_diff"] is None and "shape [2, 1]" in shape["detail"]
    nan = check_reference(bundle, [np.array([[np.nan, 2.0]])])[0]
    assert not nan["ok"] and nan["max_abs_diff"] is None and json.dumps(nan)  # the agent answers in JSON
