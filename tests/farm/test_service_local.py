"""The agent's store and HTTP service on this machine: activation killed at random points, and bad requests."""

from __future__ import annotations

import http.client
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from serve_testbed import get, infer, serve_state, stop_services

from edgec.bundle import Bundle
from edgec.device_agent import store
from edgec.device_agent.httpd import BoundedHTTPServer, ServiceHandler
from edgec.device_agent.service import InferenceService
from edgec.errors import UsageError

TOKEN = "s3cret-token-0123456789"


def _store(tmp_path, *bundles) -> object:
    edgec_dir = tmp_path / ".edgec"
    for bundle in bundles:
        shutil.copytree(bundle.path, edgec_dir / "bundles" / bundle.bundle_id)
    return edgec_dir


def _activate_forever(edgec_dir, ids) -> None:
    """The child: activate the two bundles in turn until killed (so a kill lands inside an activation)."""
    try:
        k = 0
        while True:
            store.activate(edgec_dir, ids[k % 2])
            k += 1
    finally:
        os._exit(1)


def test_sigkill_at_random_points_of_activation_leaves_one_verified_bundle_that_serves(bundles, tmp_path):
    small, big = bundles["small"], bundles["big"]
    edgec_dir = _store(tmp_path, small, big)
    ids = [small.bundle_id, big.bundle_id]
    store.activate(edgec_dir, ids[0])
    rng = random.Random(16)
    seen = set()
    for _ in range(20):
        pid = os.fork()
        if pid == 0:
            _activate_forever(edgec_dir, ids)
        time.sleep(rng.uniform(0.002, 0.06))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        active = store.active_id(edgec_dir)
        assert active in ids
        assert os.readlink(edgec_dir / "active") == f"bundles/{active}"
        Bundle(edgec_dir / "active").check_files()  # complete and verified, through the pointer itself
        assert all(e["bundle_id"] in ids for e in store.history(edgec_dir))  # the history is never torn
        service = InferenceService(edgec_dir, threads=1, power="none")
        service.check_active()
        assert service.slot.bundle_id == active and service.health()["reference_ok"]
        seen.add(active)
    assert seen == set(ids)  # the kills landed on both sides of the switch
    os.symlink(f"bundles/{ids[1]}", edgec_dir / ".active-deadbeef")  # as a kill between symlink and rename leaves
    store.activate(edgec_dir, store.active_id(edgec_dir))  # even an activation that changes nothing sweeps it
    assert not list(edgec_dir.glob(".active-*"))  # a link a kill left half made is gone after the next one


@pytest.fixture
def service(bundles, tmp_path):
    """The service as devices run it (`agent start`): token, 4 KiB bodies, one worker and a queue of one."""
    edgec_dir = _store(tmp_path, bundles["small"])
    store.activate(edgec_dir, bundles["small"].bundle_id)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    argv = [sys.executable, "-m", "edgec.device_agent", "start", "--edgec-dir", str(edgec_dir), "--port", "0",
            "--token-file", str(token_file), "--max-body", "4096", "--workers", "1", "--queue", "1",
            "--threads", "1", "--power", "none"]
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    try:
        yield serve_state(tmp_path)["port"], edgec_dir
    finally:
        stop_services([tmp_path])


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _body(x) -> bytes:
    return json.dumps({"inputs": {"x": x}}).encode()


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_each_bad_request_gets_one_clear_error_and_the_service_stays_up(service):
    port, _ = service
    good = [[0.25] * 64]
    cases = [  # (headers, body, status, words in the error)
        ({}, _body(good), 401, "token"),
        ({"Authorization": "Bearer wrong-token-0123456789"}, _body(good), 401, "token"),
        (AUTH, b'{"inputs": {"x": [[1, 2', 400, "not valid JSON"),
        (AUTH, b"[" + b"1," * 3000 + b"1]", 413, "limit is 4096"),
        (AUTH, _body(good)[:-5], 400, "not valid JSON"),
        (AUTH, json.dumps({"inputs": {"image": good}}).encode(), 400, "do not match the model's ['x']"),
        (AUTH, _body([[0.25] * 63]), 400, "input 'x': shape [1, 63], expected float32 [1, 64]"),
        (AUTH, _body([["a"] * 64]), 400, "input 'x': not a float32 array"),
        (AUTH, b"[" * 2000 + b"]" * 2000, 400, "nests JSON arrays too deeply"),
        ({**AUTH, "Content-Type": "application/x-npy"}, _npy(np.zeros((1, 64), np.float64)), 400, "dtype float64"),
        ({**AUTH, "Content-Type": "application/x-npy"}, b"\x93NUMPY garbage", 400, "not a readable .npy"),
        ({**AUTH, "Content-Type": "text/csv"}, b"1,2", 415, "send application/json"),
    ]
    for headers, body, status, words in cases:
        code, _, raw = infer(port, body, headers)
        assert code == status, (words, raw)
        assert words in json.loads(raw)["error"]
    code, headers, raw = infer(port, _npy(np.full((1, 64), 0.25, np.float32)),
                               {**AUTH, "Content-Type": "application/x-npy", "Accept": "application/x-npy"})
    assert code == 200 and headers["Content-Type"] == "application/x-npy"
    assert np.load(io.BytesIO(raw)).shape == (1, 64)
    assert get(port, "/metrics")[0] == 401 and get(port, "/nowhere", AUTH)[0] == 404
    code, raw = get(port, "/metrics", AUTH)
    text = raw.decode()
    assert code == 200 and 'edgec_request_errors_total{reason="bad_request"} 10' in text
    assert 'edgec_request_errors_total{reason="unauthorized"} 3' in text
    code, raw = get(port, "/healthz", AUTH)
    assert code == 200 and json.loads(raw)["reference_ok"]


def test_overload_is_a_503_and_the_service_recovers(service):
    port, _ = service
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]  # one holds the worker, one queues
    try:
        code, headers, raw = infer(port, _body([[0.5] * 64]), AUTH)
        assert code == 503 and "overloaded" in json.loads(raw)["error"] and headers["Retry-After"] == "1"
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 60
    while True:  # the worker drops the idle connections as soon as they close
        code, _, raw = infer(port, _body([[0.5] * 64]), AUTH)
        if code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert code == 200, raw
    assert 'edgec_request_errors_total{reason="overloaded"}' in get(port, "/metrics", AUTH)[1].decode()


def test_a_non_loopback_address_without_a_token_is_refused_before_binding(bundles, tmp_path):
    service = InferenceService(_store(tmp_path, bundles["small"]), power="none")
    with pytest.raises(UsageError, match="non-loopback address needs --token-file"):
        BoundedHTTPServer(("0.0.0.0", 0), ServiceHandler, service, token=None)


def test_a_second_service_on_one_store_is_refused_and_stop_is_clean(service, tmp_path):
    port, edgec_dir = service
    argv = [sys.executable, "-m", "edgec.device_agent", "run", "--edgec-dir", str(edgec_dir), "--port", "0"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "the service already runs" in json.loads(done.stdout)["error"]["message"]
    pid = serve_state(tmp_path)["pid"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    stop = subprocess.run([sys.executable, "-m", "edgec.device_agent", "stop", "--edgec-dir", str(edgec_dir)],
                          capture_output=True, text=True, timeout=120)
    assert json.loads(stop.stdout) == {"stopped": pid, "killed": False}  # SIGTERM drained it; no SIGKILL
    assert not (edgec_dir / "serve.pid").exists() and not (edgec_dir / "serve.json").exists()
    with pytest.raises(OSError):
        conn.request("GET", "/healthz")
        conn.getresponse()


def _exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes; everything the service answers until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_request_heads_are_parsed_strictly_and_the_service_stays_up(service):
    """The service parses plain HTTP/1.x heads itself (http.server's email parser costs 0.1 ms with cold caches):
    each malformed head gets one clear error, HTTP/1.0 and Expect: 100-continue keep working."""
    port, _ = service
    body = _body([[0.25] * 64])
    auth = f"authorization: Bearer {TOKEN}\r\n".encode()  # header names are case-insensitive
    post = b"POST /v1/infer HTTP/1.1\r\nHost: x\r\n" + auth
    length = f"Content-Length: {len(body)}\r\n".encode()
    cases = [  # (request, status line start, words)
        (post + length + b"Connection: close\r\n\r\n" + body, b"HTTP/1.1 200", b'"bundle_id"'),
        (post + length + b"Content-Length: 3\r\n\r\n" + body, b"HTTP/1.1 400", b"conflicting content-length"),
        (post + length + b" folded: line\r\n\r\n" + body, b"HTTP/1.1 400", b"bad header line"),
        (post + length + b"no colon here\r\n\r\n" + body, b"HTTP/1.1 400", b"bad header line"),
        (post + b"X-Pad: y\r\n" * 101 + length + b"\r\n" + body, b"HTTP/1.1 431", b"more than 100 headers"),
        (post + b"X-Long: " + b"y" * 70000 + b"\r\n\r\n", b"HTTP/1.1 431", b"too long"),
        (b"DELETE /v1/infer HTTP/1.1\r\n" + auth + b"Connection: close\r\n\r\n", b"HTTP/1.1 501", b"Unsupported method"),
        (b"POST /v1/infer HTTP/1.0\r\n" + auth + length + b"\r\n" + body, b"HTTP/1.1 200", b'"bundle_id"'),
    ]
    for request, status, words in cases:
        answer = _exchange(port, request)  # returns only once the service closed the connection
        assert answer.startswith(status) and words in answer, (request[:80], answer[:300])
        assert answer.count(b"HTTP/1.1 ") == 1  # one answer, then the connection closed
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(post + length + b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and json.loads(answer.split(b"\r\n\r\n", 1)[1])["outputs"]
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:  # HTTP/1.0 keep-alive: two answers
        request = b"POST /v1/infer HTTP/1.0\r\nConnection: keep-alive\r\n" + auth + length + b"\r\n" + body
        sock.sendall(request)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200") and b"Connection: keep-alive" in first
        sock.sendall(request.replace(b"keep-alive", b"close"))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and b"Connection: close" in answer
    code, raw = get(port, "/healthz", AUTH)
    assert code == 200 and json.loads(raw)["reference_ok"]
