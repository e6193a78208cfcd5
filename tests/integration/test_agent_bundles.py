"""The agent refusing bad bundles (altered, missing, unloadable).

The bundles come from ``tests.support.agent``: ONNX ones compiled by ``edgec.api.compile`` from a small ONNX
MLP, so the tests exercise real bundles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.agent import compile_onnx_bundle, rehash, run_agent

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Path:
    from edgec.device_agent import build_zipapp

    return build_zipapp(tmp_path_factory.mktemp("agent"))


@pytest.fixture
def bundle(tmp_path) -> Path:
    return compile_onnx_bundle(tmp_path / "src", width=32)


def test_a_compiled_bundle_checks_out(agent, bundle):
    code, doc = run_agent(agent, "check", bundle)
    assert code == 0 and doc["ok"] is True and doc["runtime"]["name"] == "onnxruntime"
    assert doc["outputs"][0]["ok"] is True and doc["outputs"][0]["name"] == "y"


def test_altered_model_file_is_refused_by_name(agent, bundle):
    model = bundle / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-5] ^= 0xFF
    model.write_bytes(bytes(data))
    for command in ("check", "bench"):
        code, doc = run_agent(agent, command, bundle, *(["--power", "none"] if command == "bench" else []))
        assert code == 6 and doc["error"]["type"] == "BundleError"
        assert "model.onnx" in doc["error"]["message"] and "sha256" in doc["error"]["message"]


def test_missing_and_unlisted_files_are_refused_by_name(agent, bundle):
    (bundle / "reference" / "outputs.npz").rename(bundle / "outputs.npz")
    code, doc = run_agent(agent, "check", bundle)
    assert code == 6 and "reference/outputs.npz" in doc["error"]["message"] and "missing" in doc["error"]["message"]
    (bundle / "outputs.npz").rename(bundle / "reference" / "outputs.npz")
    (bundle / "extra.bin").write_bytes(b"x")
    code, doc = run_agent(agent, "check", bundle)
    assert code == 6 and "extra.bin" in doc["error"]["message"]


def test_reference_outputs_out_of_tolerance_are_refused_by_output(agent, bundle):
    with np.load(bundle / "reference/outputs.npz") as data:
        wrong = data["o0"] + 1.0
    np.savez(bundle / "reference/outputs.npz", o0=wrong)
    rehash(bundle)
    code, doc = run_agent(agent, "bench", bundle, "--power", "none")
    assert code == 6 and "output 'y'" in doc["error"]["message"]


def test_model_that_fails_to_load_gives_the_runtime_reason(agent, bundle):
    (bundle / "model.onnx").write_bytes(b"this is not a protobuf")
    rehash(bundle)
    code, doc = run_agent(agent, "bench", bundle, "--power", "none")
    assert code == 6 and "onnxruntime cannot load this model" in doc["error"]["message"]
    assert "model.onnx" in doc["error"]["message"] and len(doc["error"]["message"]) > 60
