"""The agent zipapp in fresh virtualenvs holding only numpy + one runtime, as on a device.

The virtualenvs are made once (``python -m venv`` + ``pip install`` of the versions installed here, so pip's
wheel cache serves them) under /tmp/edgec-test-venvs/<key> and reused while they exist.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.agent import compile_onnx_bundle, keras_tflite, run_agent, tflite_bundle

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("agent-venvs")]
VENV_CACHE = Path(os.environ.get("EDGEC_TEST_VENVS", "/tmp/edgec-test-venvs"))


def device_venv(packages: list[str]) -> Path:
    """A virtualenv with exactly ``packages`` (and their dependencies), made once and reused; its python."""
    pins = sorted(f"{p}=={importlib.metadata.version(p)}" for p in packages)
    key = hashlib.sha256(json.dumps([sys.version, pins]).encode()).hexdigest()[:12]
    folder = VENV_CACHE / f"{'-'.join(packages) or 'bare'}-{key}"
    python = folder / "bin" / "python"
    VENV_CACHE.mkdir(parents=True, exist_ok=True)
    with open(VENV_CACHE / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # xdist workers or parallel CI runs: one builds, the others wait
        if not (folder / ".ready").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            base = getattr(sys, "_base_executable", sys.executable)
            subprocess.run([base, "-m", "venv", *([] if pins else ["--without-pip"]), str(folder)], check=True,
                           capture_output=True, timeout=300)
            if pins:
                done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                       *pins], capture_output=True, text=True, timeout=900)
                if done.returncode != 0:
                    pytest.fail(f"pip install {' '.join(pins)} failed: {done.stderr[-1500:]}")
            (folder / ".ready").write_text("\n".join(pins))
    return python


@pytest.fixture(scope="session")
def ort_python() -> Path:
    return device_venv(["numpy", "onnxruntime"])


@pytest.fixture(scope="session")
def litert_python() -> Path:
    return device_venv(["numpy", "ai-edge-litert"])


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Path:
    from edgec.device_agent import build_zipapp

    return build_zipapp(tmp_path_factory.mktemp("agent"))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("venv-bundles")
    tflite = keras_tflite(folder / "tiny.tflite")
    onnx_bundle = compile_onnx_bundle(folder / "onnx", width=32)
    from edgec import api

    emitted = api.compile(str(folder / "onnx" / "mlp.onnx"), folder / "mlp-tflite.bundle", target="host",
                          format="tflite").path  # the TFLite emitter's own bundle (onnx2tf)
    return {"onnx": onnx_bundle, "tflite": tflite_bundle(folder / "tiny.bundle", tflite), "tflite_emitted": emitted}


def imports(python: Path, *modules: str) -> dict:
    code = ("import importlib.util, json, sys; "
            "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(python), "-c", code, *modules], capture_output=True, text=True, check=True,
                          cwd=python.parent, env=env)
    return json.loads(done.stdout)


def test_onnxruntime_only_venv_runs_the_agent(agent, bundles, ort_python):
    assert imports(ort_python, "onnxruntime", "numpy", "ai_edge_litert", "tensorflow", "torch", "onnx", "edgec") == {
        "onnxruntime": True, "numpy": True, "ai_edge_litert": False, "tensorflow": False, "torch": False,
        "onnx": False, "edgec": False}
    code, info = run_agent(agent, "info", python=str(ort_python))
    assert code == 0 and info["runtimes"]["onnxruntime"] and info["runtimes"]["litert"] is None
    code, doc = run_agent(agent, "bench", bundles["onnx"], "--runs", "25", "--idle", "0", python=str(ort_python))
    assert code == 0, doc
    assert doc["runtime"]["name"] == "onnxruntime" and doc["latency_ms"]["count"] == 25
    assert doc["conditions"]["python"]["executable"].startswith(str(ort_python.parent.parent))


def test_litert_only_venv_runs_the_agent(agent, bundles, litert_python):
    assert imports(litert_python, "ai_edge_litert", "onnxruntime", "tensorflow", "torch") == {
        "ai_edge_litert": True, "onnxruntime": False, "tensorflow": False, "torch": False}
    code, info = run_agent(agent, "info", python=str(litert_python))
    assert code == 0 and info["runtimes"]["litert"] and info["runtimes"]["onnxruntime"] is None
    code, doc = run_agent(agent, "bench", bundles["tflite"], "--runs", "25", "--threads", "2", "--idle", "0",
                          python=str(litert_python))
    assert code == 0, doc
    assert doc["runtime"]["name"] == "litert" and doc["runtime"]["xnnpack"] is True
    assert doc["runtime"]["threads"] == 2 and doc["check"]["outputs"][0]["ok"]
    code, doc = run_agent(agent, "bench", bundles["tflite_emitted"], "--runs", "10", "--idle", "0",
                          python=str(litert_python))
    assert code == 0, doc
    assert doc["runtime"]["name"] == "litert" and doc["bundle"]["format"] == "tflite"


def test_missing_runtime_names_the_package_to_install(agent, bundles, ort_python, litert_python):
    code, doc = run_agent(agent, "bench", bundles["tflite"], python=str(ort_python))
    assert code == 7 and doc["error"]["type"] == "RuntimeMissingError"
    assert "pip install ai-edge-litert" in doc["error"]["message"]
    code, doc = run_agent(agent, "check", bundles["onnx"], python=str(litert_python))
    assert code == 7 and "pip install onnxruntime" in doc["error"]["message"]


def test_python_without_numpy_is_told_what_to_install(agent, bundles):
    python = device_venv([])
    code, info = run_agent(agent, "info", python=str(python))
    assert code == 0 and info["numpy"] is None and info["runtimes"] == {"litert": None, "onnxruntime": None}
    code, doc = run_agent(agent, "bench", bundles["onnx"], python=str(python))
    assert code == 7 and "pip install numpy" in doc["error"]["message"]
