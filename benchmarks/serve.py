"""The agent's HTTP inference service against the bare runtime, on the same model in the same run.

For each model: the median time of one request through the service (a keep-alive HTTP client on loopback,
``.npy`` and JSON bodies) against the median of a bare ``session.run`` loop in this process with the same runtime
settings, repeated in alternation so that drift on a shared machine hits both alike. Goal: overhead per request
<= 0.2 ms or <= 5% of the bare latency, whichever is larger. Then the hot-swap time (activation to the first
answer from the new bundle, and the service's own load + self-check + switch time from /metrics), and
requests/s with 4 concurrent clients against the bare runtime's inferences/s on one thread.

Run: ``.venv/bin/python -m benchmarks.serve``. Writes build/bench/serve.json.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edgec.examples.onnx_models import onnx_mlp

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "build" / "bench" / "serve.json"
REPEATS = 6
BLOCK = 300  # requests (and bare runs) per block
THREADS = 1


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            line = next((x for x in handle if x.startswith("flags")), "flags:")
    except OSError:
        line = "flags:"
    flags = set(line.split(":", 1)[1].split())
    return " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in flags) or "none of avx2/avx512"


def _bundle(work: Path, name: str, width: int, depth: int, seed: int = 0):
    from edgec import api

    source = onnx_mlp(work / f"{name}.onnx", width=width, depth=depth, seed=seed)
    return api.compile(str(source), work / f"{name}.bundle", target="host", format="onnx")


def _agent(edgec_dir: Path, *argv: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "edgec.device_agent", *argv, "--edgec-dir", str(edgec_dir)],
                          capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise RuntimeError(done.stdout + done.stderr)
    return json.loads(done.stdout)


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _timed(call, n: int) -> float:
    """Median seconds of ``n`` calls."""
    clock, lat = time.perf_counter, []
    for _ in range(n):
        start = clock()
        call()
        lat.append(clock() - start)
    return statistics.median(lat)


def _client(port: int, body: bytes, kind: str):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.connect()
    # http.client sends headers and body in two writes and, unlike curl, urllib3 or httpx, leaves Nagle's
    # algorithm on: the body would wait for the server's delayed ACK (measured: +9 ms per 20 KB request).
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    headers = {"Content-Type": kind, "Accept": kind}

    def call():
        conn.request("POST", "/v1/infer", body=body, headers=headers)
        answer = conn.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"HTTP {answer.status}")
    return call


def _raw_client(port: int, body: bytes, kind: str):
    """A minimal keep-alive client on a bare socket (request bytes built once, TCP_NODELAY): what remains is the
    service's own cost, not http.client's parsing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = (f"POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\nAccept: {kind}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    def call():
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(rest) < length:
            rest += sock.recv(65536)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head[:40])
    return call


def overhead(bundle, port: int) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
    sess = ort.InferenceSession(str(bundle.model_path), opts, providers=["CPUExecutionProvider"])
    inputs, _ = bundle.reference()
    feeds = {sess.get_inputs()[0].name: inputs[0]}
    bare = lambda: sess.run(None, feeds)  # noqa: E731
    npy = _client(port, _npy(inputs[0]), "application/x-npy")
    as_json = _client(port, json.dumps({"inputs": {"x": inputs[0].tolist()}}).encode(), "application/json")
    raw = _raw_client(port, _npy(inputs[0]), "application/x-npy")
    calls = {"bare": bare, "raw": raw, "npy": npy, "json": as_json}
    for call in calls.values():
        _timed(call, 50)  # warm-up
    rows: dict = {name: [] for name in calls}
    for _ in range(REPEATS):
        for name, call in calls.items():
            rows[name].append(_timed(call, BLOCK))
    med = {k: statistics.median(v) * 1e3 for k, v in rows.items()}
    goal = max(0.2, 0.05 * med["bare"])
    return {"bare_ms": med["bare"], "service_raw_npy_ms": med["raw"], "service_npy_ms": med["npy"],
            "service_json_ms": med["json"], "overhead_raw_npy_ms": med["raw"] - med["bare"],
            "overhead_npy_ms": med["npy"] - med["bare"], "overhead_json_ms": med["json"] - med["bare"],
            "goal_ms": goal, "raw_npy_meets_goal": med["raw"] - med["bare"] <= goal}


def swap(edgec_dir: Path, port: int, bundle, other) -> dict:
    """Activation to the first answer from the new bundle (client side), and the service's own swap time."""
    inputs, _ = bundle.reference()
    body = _npy(inputs[0])
    times = []
    for target in (other, bundle, other, bundle):
        start = time.perf_counter()
        _agent(edgec_dir, "activate", target.bundle_id)
        activated = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            conn.request("POST", "/v1/infer", body=body, headers={"Content-Type": "application/x-npy"})
            answer = conn.getresponse()
            answer.read()
            if answer.getheader("X-Edgec-Bundle") == target.bundle_id:
                break
        times.append({"activate_cli_s": activated - start, "to_first_answer_s": time.perf_counter() - activated})
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    last = [float(line.split()[-1]) for line in text.splitlines() if line.startswith("edgec_last_swap_seconds ")]
    return {"swaps": times, "median_to_first_answer_s": statistics.median(t["to_first_answer_s"] for t in times),
            "service_last_swap_s": last[0] if last else None,
            "note": "to_first_answer includes the watcher's poll interval (0.2 s default)"}


def throughput(bundle, port: int, clients: int = 4, seconds: float = 3.0) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
    sess = ort.InferenceSession(str(bundle.model_path), opts, providers=["CPUExecutionProvider"])
    inputs, _ = bundle.reference()
    feeds = {sess.get_inputs()[0].name: inputs[0]}
    end, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        sess.run(None, feeds)
        n += 1
    bare_ips = n / seconds
    return {"clients": clients, "service_rps": _hammer(port, inputs[0], clients, seconds), "bare_ips_1_thread": bare_ips,
            "note": "clients run in this process (GIL shared with nothing: the service is another process)"}


def _hammer(port: int, array, clients: int, seconds: float) -> float:
    """Requests per second that ``clients`` keep-alive clients get from the service in ``seconds``."""
    counts, stop = [0] * clients, threading.Event()

    def work(k: int) -> None:
        call = _client(port, _npy(array), "application/x-npy")
        while not stop.is_set():
            call()
            counts[k] += 1

    threads = [threading.Thread(target=work, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts) / seconds


ARM64_BUILD = REPO / "scripts" / "testbed" / "build-arm64-root.sh"


def arm64(bundle, seconds: float = 10.0) -> dict:
    """The service on the emulated Raspberry Pi 4 (qemu-user, arm64 Debian root): requests/s and one client's
    median request time, against the agent's own benchmark p50 of the same bundle there (same emulation)."""
    from edgec.device_agent import build_zipapp

    built = subprocess.run([str(ARM64_BUILD)], capture_output=True, text=True, timeout=1800)
    if built.returncode != 0:
        return {"skipped": built.stderr.strip()[-300:] or "the arm64 root could not be built"}
    root = Path(built.stdout.strip().splitlines()[-1])
    inside = Path("/run") / f"edgec-bench-serve-{os.getpid()}"
    where = root / inside.relative_to("/")
    store = where / ".edgec"
    shutil.copytree(bundle.path, store / "bundles" / bundle.bundle_id)
    shutil.copy(build_zipapp(where), where / "agent.pyz")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    agent = f"chroot {root} env -i PATH=/usr/bin:/bin HOME=/tmp python3 {inside}/agent.pyz"
    mounts = (f"mount -t proc proc {root}/proc && mount --bind /sys {root}/sys && "
              f"mount --bind {root}/etc/edgec-cpuinfo {root}/proc/cpuinfo && ")
    script = (f"{mounts}{agent} activate --edgec-dir {inside}/.edgec {bundle.bundle_id} >/dev/null && "
              f"{agent} bench {inside}/.edgec/bundles/{bundle.bundle_id} --runs 100 --warmup 10 --idle 0 "
              f"--power none --threads 1 > {where}/bench.json && "
              f"exec {agent} run --edgec-dir {inside}/.edgec --port {port} --threads 1 --power none")
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-euc", script],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        inputs, _ = bundle.reference()
        deadline = time.monotonic() + 600
        while True:
            try:
                call = _client(port, _npy(inputs[0]), "application/x-npy")
                call()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    return {"skipped": f"the service did not start: {proc.stderr.read().decode()[-300:]}"}
                time.sleep(0.5)
        bench = json.loads((where / "bench.json").read_text())
        one = _timed(call, 200) * 1e3
        return {"agent_bench_p50_ms": bench["latency_ms"]["p50"], "service_request_p50_ms": one,
                "service_rps_4_clients": _hammer(port, inputs[0], 4, seconds), "arch": bench["conditions"]["cpu"]["arch"],
                "note": "under qemu-user emulation: absolute times mean nothing, the ratio is the figure"}
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(where, ignore_errors=True)


def main() -> dict:
    work = Path(tempfile.mkdtemp(prefix="edgec-bench-serve-"))
    edgec_dir = work / ".edgec"
    out = {"cpu_flags": _cpu_flags(), "threads": THREADS, "models": {}}
    try:
        models = {"mlp-64x2 (tiny)": (64, 2), "mlp-512x4": (512, 4), "mlp-1024x8": (1024, 8)}
        bundles = {name: _bundle(work, name.split()[0], *shape) for name, shape in models.items()}
        other = _bundle(work, "other", 512, 4, seed=1)
        for bundle in [*bundles.values(), other]:
            shutil.copytree(bundle.path, edgec_dir / "bundles" / bundle.bundle_id)
        first = next(iter(bundles.values()))
        _agent(edgec_dir, "activate", first.bundle_id)
        _agent(edgec_dir, "start", "--port", "0", "--threads", str(THREADS), "--power", "none", "--workers", "4")
        port = json.loads((edgec_dir / "serve.json").read_text())["port"]
        for name, bundle in bundles.items():
            _agent(edgec_dir, "activate", bundle.bundle_id)
            _agent(edgec_dir, "wait-healthy", bundle.bundle_id)
            out["models"][name] = overhead(bundle, port)
            row = out["models"][name]
            print(f"{name:18s} bare {row['bare_ms']:.4f} ms | service, raw client .npy {row['service_raw_npy_ms']:.4f}"
                  f" ms (+{row['overhead_raw_npy_ms']:.4f}), http.client .npy {row['service_npy_ms']:.4f}, json "
                  f"{row['service_json_ms']:.4f} | goal <= +{row['goal_ms']:.3f}", flush=True)
        medium = bundles["mlp-512x4"]
        _agent(edgec_dir, "activate", medium.bundle_id)
        _agent(edgec_dir, "wait-healthy", medium.bundle_id)
        out["swap"] = swap(edgec_dir, port, medium, other)
        out["throughput"] = throughput(medium, port)
        print(f"swap: median {out['swap']['median_to_first_answer_s'] * 1e3:.1f} ms to the first answer of the new "
              f"bundle; service load+check+switch {out['swap']['service_last_swap_s'] * 1e3:.1f} ms")
        print(f"throughput: {out['throughput']['service_rps']:.0f} req/s with 4 clients vs "
              f"{out['throughput']['bare_ips_1_thread']:.0f} inf/s bare (1 thread); cpu flags: {out['cpu_flags']}")
        out["arm64_board"] = arm64(bundles["mlp-64x2 (tiny)"]) if os.geteuid() == 0 else {"skipped": "needs root"}
        board = out["arm64_board"]
        if "skipped" in board:
            print(f"arm64 board: skipped ({board['skipped']})")
        else:
            print(f"arm64 board ({board['arch']}, emulated): agent bench p50 {board['agent_bench_p50_ms']:.3f} ms, "
                  f"service request p50 {board['service_request_p50_ms']:.3f} ms, "
                  f"{board['service_rps_4_clients']:.0f} req/s with 4 clients")
    finally:
        subprocess.run([sys.executable, "-m", "edgec.device_agent", "stop", "--edgec-dir", str(edgec_dir)],
                       capture_output=True, timeout=120)
        shutil.rmtree(work, ignore_errors=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    main()
