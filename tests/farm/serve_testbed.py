"""Helpers of the inference-service tests: bundles that differ in chosen ways, HTTP clients, service cleanup."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import threading
from pathlib import Path

import numpy as np

from edgec.bundle import MANIFEST_NAME, Bundle, manifest_bytes, sha256_file


def serve_state(home: Path) -> dict:
    return json.loads((home / ".edgec" / "serve.json").read_text())


def active_id(home: Path) -> str | None:
    try:
        return os.path.basename(os.readlink(home / ".edgec" / "active"))
    except OSError:
        return None


def stop_services(homes: list[Path]) -> None:
    """SIGKILL each service a test started (by its pidfile: they live in their own sessions)."""
    for home in homes:
        try:
            pid = int((home / ".edgec" / "serve.pid").read_text())
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def perturbed(bundle: Bundle, dest: Path) -> Bundle:
    """A copy whose reference outputs come from another model (outputs + 1), every hash consistent: a bundle
    that does not reproduce on any device, though nothing in it was tampered with."""
    shutil.copytree(bundle.path, dest)
    manifest = json.loads((dest / MANIFEST_NAME).read_text())
    rel = manifest["reference"]["outputs"]
    with np.load(dest / rel) as data:
        arrays = {k: data[k] + np.float32(1.0) for k in data.files}
    with open(dest / rel, "wb") as handle:
        np.savez(handle, **arrays)
    manifest["files"][rel] = {"sha256": sha256_file(dest / rel), "size": (dest / rel).stat().st_size}
    (dest / MANIFEST_NAME).write_bytes(manifest_bytes(manifest))
    return Bundle(dest)


def expected_outputs(bundle: Bundle, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def infer(port: int, body: bytes, headers: dict | None = None, conn=None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one POST /v1/infer."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v1/infer", body=body, headers={"Content-Type": "application/json", **(headers or {})})
        answer = conn.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        if own:
            conn.close()


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


class Hammer:
    """``clients`` threads POSTing the same input over keep-alive connections until stopped; every answer kept."""

    def __init__(self, port: int, x: np.ndarray, clients: int = 4):
        self.port, self.body = port, json.dumps({"inputs": {"x": x.tolist()}}).encode()
        self.answers: list[tuple[str, np.ndarray]] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def seen(self, bundle_id: str) -> int:
        with self._lock:
            return sum(1 for b, _ in self.answers if b == bundle_id)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stop.is_set():
            try:
                status, headers, raw = infer(self.port, self.body, conn=conn)
            except (OSError, http.client.HTTPException) as exc:
                with self._lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                continue
            with self._lock:
                if status != 200:
                    self.failures.append(f"HTTP {status}: {raw[:200]!r}")
                else:
                    doc = json.loads(raw)
                    self.answers.append((headers.get("X-Edgec-Bundle"), np.asarray(doc["outputs"]["y"], np.float32)))


def conv_onnx(path: Path) -> Path:
    """A small CNN (~310 M multiply-adds, 1.2 MB of weights): milliseconds per inference, so a CPU quota shows."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    weights, nodes, prev = [], [], "x"
    for k, (cin, cout) in enumerate(((8, 128), (128, 128), (128, 128))):
        weights.append(numpy_helper.from_array((rng.standard_normal((cout, cin, 3, 3)) * 0.1).astype(np.float32),
                                               f"w{k}"))
        nodes += [helper.make_node("Conv", [prev, f"w{k}"], [f"c{k}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{k}"], [f"r{k}"])]
        prev = f"r{k}"
    nodes.append(helper.make_node("ReduceMean", [prev], ["y"], axes=[2, 3], keepdims=0))
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path
