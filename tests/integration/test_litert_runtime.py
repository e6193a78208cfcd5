"""The LiteRT runtime (edgec/runtimes/litert.py) on a real .tflite made by tf.lite.TFLiteConverter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgec.errors import BundleError
from edgec.runtimes import litert
from tests.support.agent import keras_tflite, tflite_bundle

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tflite_and_keras(tmp_path_factory):
    """(.tflite path, a function computing the Keras model's outputs) for a tiny Dense model."""
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("litert")
    path = keras_tflite(folder / "tiny.tflite", features=8, seed=1)
    tf.keras.utils.set_random_seed(1)  # keras_tflite built its model after this same seed: rebuild it identically
    model = tf.keras.Sequential([tf.keras.Input(shape=(8,)), tf.keras.layers.Dense(16, activation="relu"),
                                 tf.keras.layers.Dense(4)])
    return path, lambda x: model(x).numpy()


def test_runs_like_keras_with_threads_and_xnnpack(tflite_and_keras):
    path, keras = tflite_and_keras
    session = litert.load(path, threads=2)
    x = np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32)
    (y,) = session.run([x])
    assert y.shape == (1, 4)
    np.testing.assert_allclose(y, keras(x), rtol=1e-5, atol=1e-6)
    assert session.xnnpack is True and len(session.input_names) == 1
    assert litert.package() == "ai-edge-litert"
    import ai_edge_litert

    assert litert.version() == ai_edge_litert.__version__


def test_dynamic_batch_is_resized(tflite_and_keras):
    path, keras = tflite_and_keras
    session = litert.load(path)
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    (y,) = session.run([x])
    np.testing.assert_allclose(y, keras(x), rtol=1e-5, atol=1e-6)
    (y1,) = session.run([x[:1]])  # and back
    np.testing.assert_allclose(y1, keras(x[:1]), rtol=1e-5, atol=1e-6)
    call = session.bind([x])  # the benchmark's hot-loop form: shapes settled once
    np.testing.assert_allclose(call()[0], keras(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(call()[0], y, rtol=0, atol=0)


def test_unloadable_model_names_the_file_and_reason(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(BundleError, match=r"bad\.tflite: ai-edge-litert cannot load this model: .+"):
        litert.load(bad)


def test_agent_benchmarks_a_tflite_bundle(tflite_and_keras, tmp_path):
    from edgec.device_agent import run_bench

    bundle = tflite_bundle(tmp_path / "tiny.bundle", tflite_and_keras[0])
    doc = run_bench(bundle, {"runs": 30, "warmup": 3, "threads": 1, "power": "none", "idle_s": 0})
    assert doc["runtime"]["name"] == "litert" and doc["runtime"]["xnnpack"] is True
    assert doc["runtime"]["package"] == "ai-edge-litert" and doc["runtime"]["threads"] == 1
    assert doc["latency_ms"]["count"] == 30 and doc["check"]["outputs"][0]["ok"]


def test_running_a_tflite_model_does_not_import_tensorflow(tflite_and_keras):
    code = f"""
import json, sys
import numpy as np
from edgec.runtimes import litert
session = litert.load({str(tflite_and_keras[0])!r}, threads=1)
session.run([np.zeros((1, 8), np.float32)])
print(json.dumps([m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'torch', 'keras')]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_xnnpack_notice_stays_off_the_console(tflite_and_keras):
    """LiteRT's C++ prints it once per process, so a fresh one: loading and running print nothing at all."""
    code = f"from edgec.runtimes import litert; import numpy as np; litert.load({str(tflite_and_keras[0])!r}).run(" \
           "[np.zeros((1, 8), np.float32)])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


def test_other_stderr_output_while_loading_is_passed_on(capfd):
    import os

    with litert._without_delegate_notice():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nERROR: something real\n")
    assert capfd.readouterr().err == "ERROR: something real\n"
