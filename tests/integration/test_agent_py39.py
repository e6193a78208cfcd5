"""The device agent on CPython 3.9, the oldest Python it supports (Raspberry Pi OS bullseye ships it).

A Debian bullseye root (scripts/testbed/build-py39-root.sh, cached outside the repository in
/var/cache/edgec/py39-root or $EDGEC_PY39_ROOT; a minute or two the first time) holds the real 3.9 interpreter
and cp39 wheels of numpy, onnxruntime and ai-edge-litert; the zipapp runs there under chroot, as on a device.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.agent import compile_onnx_bundle, keras_tflite, tflite_bundle

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("py39")]
REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "scripts" / "testbed" / "build-py39-root.sh"


@pytest.fixture(scope="module")
def py39_root() -> Path:
    done = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "PYTHON": sys.executable})
    if done.returncode == 3:
        pytest.skip(done.stderr.strip())  # not root, or no mmdebstrap: the reason is stated
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def device(py39_root, tmp_path_factory):
    """A directory inside the root holding the agent zipapp and two bundles; yields (root, its path in there)."""
    from edgec.device_agent import build_zipapp

    inside = Path("/tmp") / f"edgec-test-{secrets.token_hex(4)}"
    where = py39_root / inside.relative_to("/")
    where.mkdir(parents=True)
    work = tmp_path_factory.mktemp("py39")
    shutil.copy(build_zipapp(work), where / "agent.pyz")
    shutil.copytree(compile_onnx_bundle(work / "onnx"), where / "onnx.bundle")
    shutil.copytree(tflite_bundle(work / "tflite.bundle", keras_tflite(work / "tiny.tflite")), where / "tflite.bundle")
    yield py39_root, inside
    shutil.rmtree(where, ignore_errors=True)


def agent(device, *argv, stdin: str | None = None) -> subprocess.CompletedProcess:
    root, inside = device
    script = ('mount -t proc proc "$1/proc"; r=$1; shift; '
              'exec chroot "$r" env -i PATH=/usr/bin:/bin HOME=/tmp PYTHONPATH=/opt/edgec-py39 python3 "$@"')
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-euc", script, "sh", str(root),
                           str(inside / "agent.pyz"), *argv], input=stdin, capture_output=True, text=True,
                          timeout=300)


def document(done: subprocess.CompletedProcess) -> dict:
    assert done.stdout.strip(), done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_info_reports_python_3_9_and_both_runtimes(device):
    done = agent(device, "info")
    assert done.returncode == 0, done.stderr
    info = document(done)
    assert info["python"].startswith("3.9.")
    assert info["runtimes"]["onnxruntime"] and info["runtimes"]["litert"]
    assert info["runtime_packages"]["litert"] == "ai-edge-litert"


@pytest.mark.parametrize("bundle", ["onnx.bundle", "tflite.bundle"])
def test_check_and_bench_both_runtimes_on_python_3_9(device, bundle):
    path = str(device[1] / bundle)
    checked = agent(device, "check", path)
    assert checked.returncode == 0 and document(checked)["ok"] is True, checked.stdout + checked.stderr
    done = agent(device, "bench", path, "--runs", "20", "--warmup", "2", "--idle", "0", "--power", "none")
    assert done.returncode == 0, done.stderr[-3000:]
    result = document(done)
    assert result["latency_ms"]["count"] == 20 and result["latency_ms"]["p50"] > 0
    assert result["conditions"]["python"]["version"].startswith("3.9.")
    assert result["conditions"]["os"]["distribution"].startswith("Debian GNU/Linux 11")


def test_serve_with_heartbeat_on_python_3_9(device):
    path = str(device[1] / "onnx.bundle")
    requests = "".join(json.dumps(r) + "\n" for r in (
        {"id": 1, "op": "info"},
        {"id": 2, "op": "bench", "bundle": path, "runs": 10, "warmup": 1, "idle_s": 0, "power": "none"},
        {"id": 3, "op": "quit"}))
    done = agent(device, "serve", "--heartbeat", "60", stdin=requests)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["id"] for a in answers] == [1, 2, 3] and all(a["ok"] for a in answers)
    assert answers[1]["result"]["latency_ms"]["count"] == 10


def test_the_inference_service_on_python_3_9(device):
    """``activate`` then ``run`` under the 3.9 interpreter; this process is the HTTP client (same network)."""
    import http.client
    import socket
    import time

    import numpy as np

    from edgec.bundle import Bundle, check_reference

    root, inside = device
    store = inside / "store"
    bundle = Bundle(root / (inside / "onnx.bundle").relative_to("/"))
    shutil.copytree(bundle.path, root / (store / "bundles" / bundle.bundle_id).relative_to("/"))
    activated = agent(device, "activate", "--edgec-dir", str(store), bundle.bundle_id[:12])
    assert document(activated)["active"] == bundle.bundle_id, activated.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = ('mount -t proc proc "$1/proc"; r=$1; shift; '
              'exec chroot "$r" env -i PATH=/usr/bin:/bin HOME=/tmp PYTHONPATH=/opt/edgec-py39 python3 "$@"')
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-euc", script, "sh", str(root),
                             str(inside / "agent.pyz"), "run", "--edgec-dir", str(store), "--port", str(port),
                             "--power", "none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        inputs, _ = bundle.reference()
        body = json.dumps({"inputs": {m["name"]: a.tolist() for m, a in zip(bundle.inputs, inputs)}})
        deadline, answer = time.monotonic() + 120, None
        while answer is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("POST", "/v1/infer", body=body, headers={"Content-Type": "application/json"})
                answer = conn.getresponse()
            except OSError:
                time.sleep(0.2)
        assert answer is not None and answer.status == 200, proc.stderr.read().decode()[-2000:] if proc.poll() else ""
        doc = json.loads(answer.read())
        produced = [np.asarray(doc["outputs"][m["name"]], np.float32) for m in bundle.outputs]
        assert doc["bundle_id"] == bundle.bundle_id and all(r["ok"] for r in check_reference(bundle, produced))
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        assert f'edgec_active_bundle_info{{bundle_id="{bundle.bundle_id}",role="serving"}} 1' in text
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0  # SIGTERM: drained and exited cleanly
