"""The service's life on the device without systemd: ``run`` in the foreground, ``start``/``stop`` with a
pidfile, ``status`` and ``wait-healthy`` as the host's probes (they talk to the service over loopback HTTP).

``EDGEC_DIR/serve.pid`` holds the running service's PID and ``EDGEC_DIR/serve.json`` its address, both written
to a temporary name and renamed, and removed on a clean exit (SIGTERM/SIGINT: stop accepting, let the workers
finish, then go). A pidfile whose process is gone (a kill, a reboot) is taken over; one whose process is still an
edgec agent is refused, so two services never fight over one port.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from edgec.device_agent import store
from edgec.errors import DeviceError, UsageError

__all__ = ["run_service", "service_status", "start_service", "stop_service", "wait_healthy"]

PIDFILE, STATEFILE, LOGFILE = "serve.pid", "serve.json", "serve.log"


def _alive_agent(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"edgec" in handle.read()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True


def _read_pid(edgec_dir: Path) -> int | None:
    try:
        return int((edgec_dir / PIDFILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_service(edgec_dir, host: str = "127.0.0.1", port: int = 8750, token_file: str | None = None,
                workers: int = 4, queue_size: int = 32, max_body: int = 16 << 20, threads: int | None = None,
                sysfs_root: str = "/sys", power: str = "auto", poll_s: float = 0.2) -> dict:
    """Serve until SIGTERM/SIGINT; returns what it served. Raises UsageError when one already runs here."""
    from edgec.device_agent.httpd import BoundedHTTPServer, ServiceHandler, read_token
    from edgec.device_agent.service import InferenceService

    edgec_dir = Path(edgec_dir).expanduser()
    edgec_dir.mkdir(parents=True, exist_ok=True)
    other = _read_pid(edgec_dir)
    if other and other != os.getpid() and _alive_agent(other):
        raise UsageError(f"{edgec_dir / PIDFILE}: the service already runs (pid {other}); stop it first "
                         "(agent stop) or use another --edgec-dir")
    token = read_token(token_file)
    service = InferenceService(edgec_dir, threads=threads, sysfs_root=sysfs_root, power=power, poll_s=poll_s)
    service.start()
    server = BoundedHTTPServer((host, port), ServiceHandler, service, token, workers, queue_size, max_body)
    state = {"pid": os.getpid(), "host": host, "port": server.server_address[1], "token_file": token_file,
             "started_at": service.metrics.started, "edgec_dir": str(edgec_dir)}
    _write(edgec_dir / PIDFILE, f"{os.getpid()}\n")
    _write(edgec_dir / STATEFILE, json.dumps(state))

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        service.stop()
        server.server_close()
        if _read_pid(edgec_dir) == os.getpid():
            for name in (STATEFILE, PIDFILE):
                try:
                    (edgec_dir / name).unlink()
                except OSError:
                    pass
    return {"stopped": True, "served": service.slot.bundle_id if service.slot else None}


def _agent_argv() -> list[str]:
    """How to start this same agent again: the zipapp when running from one, else the package."""
    main = sys.modules.get("__main__")
    archive = getattr(getattr(getattr(main, "__spec__", None), "loader", None), "archive", None)
    if archive is None and getattr(main, "__file__", "") and sys.argv and sys.argv[0].endswith(".pyz"):
        archive = sys.argv[0]
    return [sys.executable, archive] if archive else [sys.executable, "-m", "edgec.device_agent"]


def start_service(edgec_dir, run_args: list[str], timeout: float = 60.0) -> dict:
    """Start ``run`` detached (own session, output to serve.log) and wait until it answers /healthz or dies."""
    edgec_dir = Path(edgec_dir).expanduser()
    edgec_dir.mkdir(parents=True, exist_ok=True)
    running = _read_pid(edgec_dir)
    if running and _alive_agent(running):
        return {"started": False, "pid": running, "already_running": True}
    with open(edgec_dir / LOGFILE, "ab") as log:
        proc = subprocess.Popen([*_agent_argv(), "run", "--edgec-dir", str(edgec_dir), *run_args],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (edgec_dir / LOGFILE).read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise DeviceError(f"the service exited at start with code {proc.returncode}: {tail[0][:300]}")
        doc = _state(edgec_dir)
        if doc and doc.get("pid") == proc.pid and _get(doc, "/healthz", 2.0)[0] is not None:
            return {"started": True, "pid": proc.pid, "port": doc["port"]}
        time.sleep(0.1)
    raise DeviceError(f"the service (pid {proc.pid}) did not answer /healthz within {timeout:g} s; see "
                      f"{edgec_dir / LOGFILE}")


def stop_service(edgec_dir, timeout: float = 30.0) -> dict:
    """SIGTERM the pidfile's service, wait for it to drain and exit, SIGKILL after ``timeout``."""
    edgec_dir = Path(edgec_dir).expanduser()
    pid = _read_pid(edgec_dir)
    if not pid or not _alive_agent(pid):
        return {"stopped": None}
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive_agent(pid):
        time.sleep(0.05)
    killed = _alive_agent(pid)
    if killed:
        os.kill(pid, signal.SIGKILL)
    return {"stopped": pid, "killed": killed}


def _state(edgec_dir: Path) -> dict | None:
    try:
        doc = json.loads((edgec_dir / STATEFILE).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _request(state: dict, path: str, timeout: float, body: bytes | None = None) -> urllib.request.Request:
    host = state.get("host") or "127.0.0.1"
    host = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    req = urllib.request.Request(f"http://{host}:{state['port']}{path}", data=body)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if state.get("token_file"):
        from edgec.device_agent.httpd import read_token

        req.add_header("Authorization", f"Bearer {read_token(state['token_file'])}")
    return req


def _get(state: dict, path: str, timeout: float, body: bytes | None = None) -> tuple[int | None, bytes, dict]:
    """(status, body, headers); status None when nothing answered."""
    try:
        with urllib.request.urlopen(_request(state, path, timeout, body), timeout=timeout) as answer:
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers or {})
    except (OSError, ValueError):
        return None, b"", {}


def _probe(state: dict, edgec_dir: Path, bundle_id: str, count: int, timeout: float) -> dict:
    """Send the bundle's reference inputs ``count`` times through the service; compare the last answer."""
    from edgec.bundle import Bundle, check_reference

    bundle = Bundle(store.bundle_dir(edgec_dir, bundle_id))
    inputs, _ = bundle.reference()
    body = json.dumps({"inputs": {m["name"]: a.tolist() for m, a in zip(bundle.inputs, inputs)}}).encode()
    answered: dict = {}
    errors, last = [], None
    for _ in range(count):
        code, raw, _ = _get(state, "/v1/infer", timeout, body)
        if code == 200:
            last = json.loads(raw)
            answered[last["bundle_id"]] = answered.get(last["bundle_id"], 0) + 1
        else:
            errors.append(f"HTTP {code}: {raw[:200].decode(errors='replace')}" if code else "no answer")
            if code is None:
                break  # a hung service: one timeout says it
    records = None
    if last is not None and last["bundle_id"] == bundle_id:
        records = check_reference(bundle, [last["outputs"][m["name"]] for m in bundle.outputs])
    ok = bool(records) and all(r["ok"] for r in records) and not errors
    return {"count": count, "answered_by": answered, "errors": errors[:5], "reference": records, "ok": ok}


def service_status(edgec_dir, probe: str | None = None, probe_count: int = 1, timeout: float = 3.0) -> dict:
    """What the service says: /healthz, /metrics text, and optionally a reference probe of bundle ``probe``."""
    edgec_dir = Path(edgec_dir).expanduser()
    state, pid = _state(edgec_dir), _read_pid(edgec_dir)
    doc = {"running": bool(pid and _alive_agent(pid)), "pid": pid, "state": state,
           "active": store.active_id(edgec_dir), "history": store.history(edgec_dir)}
    if not state or not doc["running"]:
        return {**doc, "healthz": None, "metrics": None}
    if probe:  # first, so the metrics read next count these requests
        doc["probe"] = _probe(state, edgec_dir, probe, probe_count, timeout)
    code, raw, _ = _get(state, "/healthz", timeout)
    doc["healthz_status"] = code
    try:
        doc["healthz"] = json.loads(raw) if code else None
    except ValueError:
        doc["healthz"] = None
    code, raw, _ = _get(state, "/metrics", timeout) if code else (None, b"", {})  # a hung service: once is enough
    doc["metrics"] = raw.decode(errors="replace") if code == 200 else None
    return doc


def wait_healthy(edgec_dir, bundle_id: str, timeout: float = 30.0) -> dict:
    """Poll until the service serves ``bundle_id`` and its reference inputs reproduce through it, it refuses
    the bundle, or ``timeout`` passes. ``{"healthy": bool, "reason": str, ...}``."""
    deadline = time.monotonic() + timeout
    reason = "no answer from the service"
    while True:
        status = service_status(edgec_dir, timeout=max(0.5, min(2.0, deadline - time.monotonic())))
        health = status.get("healthz") or {}
        error = health.get("swap_error") or {}
        if error.get("bundle_id") == bundle_id and health.get("active") == bundle_id:
            return {"healthy": False, "reason": f"the service refused the bundle: {error.get('message')}",
                    "serving": health.get("serving")}
        if health.get("serving") == bundle_id:
            probe = service_status(edgec_dir, probe=bundle_id, timeout=min(5.0, timeout))["probe"]
            if probe["ok"]:
                return {"healthy": True, "reason": "", "serving": bundle_id, "probe": probe}
            reason = f"reference inputs did not reproduce through the service: {probe}"
        elif not status["running"]:
            reason = "the service is not running"
        elif health:
            reason = f"still serving {str(health.get('serving'))[:16]}"
        if time.monotonic() >= deadline:
            return {"healthy": False, "reason": f"not healthy within {timeout:g} s ({reason})",
                    "serving": health.get("serving")}
        time.sleep(0.2)
