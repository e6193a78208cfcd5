"""Helpers shared by the agent tests: real bundles (compiled by edgec, or written around a TFLite model) and a
way to run the agent zipapp. A module of its own, so no test module imports another."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgec.bundle import MANIFEST_NAME, SCHEMA_VERSION, manifest_bytes, sha256_file
from edgec.examples.onnx_models import onnx_mlp

__all__ = ["add_bundle", "add_onnx", "compile_onnx_bundle", "keras_tflite", "rehash", "run_agent", "tflite_bundle",
           "write_bundle"]


def compile_onnx_bundle(workdir: Path, width: int = 64, depth: int = 2, name: str = "mlp") -> Path:
    """A real bundle: ``edgec.api.compile`` of an ONNX MLP for the host."""
    from edgec import api

    workdir.mkdir(parents=True, exist_ok=True)
    source = onnx_mlp(workdir / f"{name}.onnx", width, depth)
    return api.compile(str(source), workdir / f"{name}.bundle", target="host").path


def keras_tflite(path: Path, features: int = 8, seed: int = 0) -> Path:
    """A tiny Keras model (Dense-ReLU-Dense) converted with tf.lite.TFLiteConverter."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential([tf.keras.Input(shape=(features,)), tf.keras.layers.Dense(16, activation="relu"),
                                 tf.keras.layers.Dense(4)])
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def write_bundle(out: Path, model: Path, fmt: str, inputs: list[np.ndarray], outputs: list[np.ndarray],
                 in_names: list[str], out_names: list[str], rtol: float = 1e-4, atol: float = 1e-5) -> Path:
    """A bundle directory around ``model`` with the given reference I/O, manifest per edgec/bundle.py."""
    (out / "reference").mkdir(parents=True)
    model_file = f"model.{fmt}"
    (out / model_file).write_bytes(model.read_bytes())
    np.savez(out / "reference/inputs.npz", **{f"i{k}": a for k, a in enumerate(inputs)})
    np.savez(out / "reference/outputs.npz", **{f"o{k}": a for k, a in enumerate(outputs)})

    def io(names, arrays):
        return [{"name": n, "shape": list(a.shape), "dtype": str(a.dtype)} for n, a in zip(names, arrays)]

    rels = [model_file, "reference/inputs.npz", "reference/outputs.npz"]
    manifest = {"schema_version": SCHEMA_VERSION, "name": model.stem, "format": fmt, "model_file": model_file,
                "io": {"inputs": io(in_names, inputs), "outputs": io(out_names, outputs)},
                "files": {r: {"sha256": sha256_file(out / r), "size": (out / r).stat().st_size} for r in rels},
                "reference": {"inputs": "reference/inputs.npz", "outputs": "reference/outputs.npz",
                              "rtol": rtol, "atol": atol},
                "target": {"name": "host"}}
    (out / MANIFEST_NAME).write_bytes(manifest_bytes(manifest))
    return out


def tflite_bundle(out: Path, tflite: Path, seed: int = 0) -> Path:
    """A .tflite bundle whose reference outputs LiteRT computes here."""
    from edgec.runtimes import litert

    session = litert.load(tflite)
    shape = session._inputs[0]["shape"]
    x = np.random.default_rng(seed).standard_normal(tuple(int(n) for n in shape)).astype(np.float32)
    return write_bundle(out, tflite, "tflite", [x], session.run([x]), session.input_names, session.output_names)


def rehash(bundle: Path) -> None:
    """Make the manifest match the files again (to get past the hash check to a later one)."""
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    for rel, meta in manifest["files"].items():
        meta["sha256"], meta["size"] = sha256_file(bundle / rel), (bundle / rel).stat().st_size
    (bundle / MANIFEST_NAME).write_bytes(manifest_bytes(manifest))


def run_agent(agent: Path, *argv, python: str = sys.executable, timeout: float = 300) -> tuple[int, dict]:
    """Run the zipapp as a device would: no PYTHONPATH, from a neutral directory; (exit code, JSON document)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([python, str(agent), *map(str, argv)], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=agent.parent)
    lines = done.stdout.strip().splitlines()
    assert lines, f"no JSON on stdout; stderr: {done.stderr[-2000:]}"
    return done.returncode, json.loads(lines[-1])


def add_onnx(path: Path, value: float) -> Path:
    """y = x + value on float32[1, 4]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph([helper.make_node("Add", ["x", "c"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(np.full((1, 4), value, np.float32), "c")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), str(path))
    return path


def add_bundle(tmp_path: Path, value: float = 1.0, name: str = "b") -> Path:
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    model = add_onnx(tmp_path / f"{name}.onnx", value)
    return write_bundle(tmp_path / name, model, "onnx", [x], [x + value], ["x"], ["y"])
