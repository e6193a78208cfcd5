"""``edgec farm status --watch`` against a loopback device serving a bundle: rounds refresh, Ctrl-C and --count end
it cleanly, and piped output stays machine-readable (JSON Lines, or tables without terminal escapes)."""

from __future__ import annotations

import json
import queue
import signal
import threading

import numpy as np
from farm_testbed import edgec, edgec_process, inventory
from serve_testbed import infer, serve_state, stop_services

from edgec.deploy.results import ResultsStore

DEADLINE = 120.0  # generous: the machine is shared; nothing below waits for a fixed time


def _lines(stream) -> queue.Queue:
    """The stream's lines as they arrive (None at its end), read on a thread."""
    out: queue.Queue = queue.Queue()

    def read():
        for line in stream:
            out.put(line)
        out.put(None)
    threading.Thread(target=read, daemon=True).start()
    return out


def _round(lines: queue.Queue) -> list:
    line = lines.get(timeout=DEADLINE)
    assert line is not None, "the watch ended before this round"
    assert line.endswith("\n")
    return json.loads(line)


def test_watch_refreshes_until_ctrl_c_and_count_ends_it(sshd, home, bundles, device_python):
    server = sshd("pi")
    inventory(home, [("pi", server, device_python)])
    bundle = bundles["small"]
    try:
        deployed = edgec(home, "deploy", str(bundle.path), "--device", "pi", "--trust-new-host", "--port", "0")
        assert deployed.returncode == 0, deployed.stderr
        port = serve_state(server.home)["port"]
        body = json.dumps({"inputs": {"x": np.zeros((1, 64), np.float32).tolist()}}).encode()

        watch = edgec_process(home, "farm", "status", "--watch", "--interval", "0.5", "--json")
        try:
            lines = _lines(watch.stdout)
            [first] = _round(lines)
            assert first["device"] == "pi" and first["bundle_id"] == bundle.bundle_id and not first.get("error")
            for _ in range(5):  # traffic between two rounds: the next round must see it
                assert infer(port, body)[0] == 200
            seen = 1
            while True:
                [row] = _round(lines)
                seen += 1
                if row["requests"] >= first["requests"] + 5:
                    break
            assert row["at"] > first["at"] and row["rate_rps"] > 0
            watch.send_signal(signal.SIGINT)
            code = watch.wait(timeout=DEADLINE)
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.wait()
        stderr = watch.stderr.read()
        assert code == 0 and "Traceback" not in stderr, stderr
        rest = []
        while (line := lines.get(timeout=DEADLINE)) is not None:
            rest.append(line)
        assert all(isinstance(json.loads(line), list) for line in rest)  # whole rounds only, even after Ctrl-C

        counted = edgec(home, "farm", "status", "--watch", "--interval", "0.5", "--count", "2", timeout=DEADLINE)
        assert counted.returncode == 0, counted.stderr
        assert counted.stdout.count("bench p99") == 2 and "\x1b" not in counted.stdout  # piped: no screen codes
        assert counted.stdout.count(bundle.bundle_id[:16]) == 2
        with ResultsStore(home / ".edgec" / "results.db") as store:  # every complete round's sample was stored
            samples = store.live_samples("pi")
        assert len(samples) >= seen + len(rest) + 2 and {s["bundle_id"] for s in samples} == {bundle.bundle_id}
    finally:
        stop_services([server.home])
