"""Run the device agent on one device over SSH: install it, check the runtime, push, benchmark.

The agent is the zipapp from ``edgec.device_agent.build_zipapp`` (see notes/AGENT_CONTRACT.md), run with the
device's own Python (``python`` in the inventory). Everything it prints on stdout is JSON; an error document
``{"error": {"type", "message"}}`` becomes the same EdgecError subclass here, its message prefixed with the
device. A benchmark is never retried: a connection lost half way is reported as such.
"""

from __future__ import annotations

import functools
import json
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgec.bundle import Bundle
from edgec.deploy.inventory import Device, edgec_home
from edgec.deploy.push import install_agent, push_bundle
from edgec.deploy.ssh import Connection, SshOptions, connect
from edgec.device_agent.client import check_result, parse_output
from edgec.device_agent.options import BenchOptions
from edgec.errors import DeviceError, RuntimeMissingError

__all__ = ["AgentSession", "RemoteBench", "agent_call", "agent_zipapp", "bench_on_device", "check_runtime",
           "device_info", "install_command"]

# The agent session ends itself when no line came from us for this long (a link that died without sshd noticing:
# otherwise its benchmark would run on and skew the device's next measurement); we send one every quarter of it.
HEARTBEAT_S = 60.0

# What to pip-install on a device for each runtime (the agent also needs numpy).
_PIP = {"onnxruntime": "numpy onnxruntime", "litert": "numpy ai-edge-litert"}


@functools.lru_cache(maxsize=1)
def agent_zipapp() -> Path:
    """Build (once per process) the agent zipapp; its name carries its content hash."""
    try:
        from edgec.device_agent import build_zipapp
    except ImportError as exc:
        raise DeviceError(f"the device agent is not part of this edgec install ({exc}); reinstall edgec") from None
    cache = edgec_home() / "agent"  # the same place `edgec bench --device local` builds it
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        cache = Path(tempfile.mkdtemp(prefix="edgec-agent-"))
    return Path(build_zipapp(cache))


def install_command(device: Device, runtime: str) -> str:
    return f"{device.python} -m pip install {_PIP.get(runtime, runtime)}"


def agent_call(conn: Connection, device: Device, argv: list[str], timeout: float | None = None,
               what: str = "agent") -> dict:
    """Run the agent argv (``[python, agent, command, ...]``) on the device and return its JSON document.

    Raises:
        RuntimeMissingError: the device has no such Python.
        EdgecError subclass: what the agent reported (``{"error": {"type", "message"}}``).
        DeviceError: no JSON came back.
    """
    result = conn.run(" ".join(shlex.quote(a) for a in argv), timeout=timeout, what=what)
    if result.exit_code == 127:
        raise _no_python(conn.target.label, device)
    return parse_output(result.stdout, result.exit_code, result.stderr, where=conn.target.label)


def device_info(conn: Connection, device: Device, agent: str, timeout: float = 120) -> dict:
    return agent_call(conn, device, [device.python, agent, "info"], timeout=timeout, what="agent info")


def check_runtime(info: dict, bundle: Bundle, device: Device, label: str) -> str:
    """The runtime the bundle needs; RuntimeMissingError with the install command when the device lacks it."""
    from edgec.runtimes import runtime_for_format

    runtime = runtime_for_format(bundle.format)
    if not (info.get("runtimes") or {}).get(runtime):
        raise RuntimeMissingError(
            f"{label}: {runtime} is not installed for {device.python} (Python {info.get('python', '?')}); "
            f"install it on the device with `{install_command(device, runtime)}` (or in a virtualenv, then "
            "set `python` in the inventory to its interpreter)")
    return runtime


@dataclass
class RemoteBench:
    """The outcome of one device's benchmark and what the push did."""

    result: dict
    pushed_bytes: int
    bundle_dir: str
    agent_version: str | None
    push_resumes: int = 0  # times the push reconnected after its link broke (a flaky link shows here)


class AgentSession:
    """One ``serve`` process of the agent on the device: ``info`` then ``bench`` without starting Python twice."""

    def __init__(self, conn: Connection, device: Device, agent: str):
        self.conn, self.device, self._id = conn, device, 0
        argv = [device.python, agent, "serve", "--heartbeat", f"{HEARTBEAT_S:g}"]
        self.proc = conn.start(" ".join(shlex.quote(a) for a in argv), what="agent serve",
                               heartbeat=HEARTBEAT_S / 4)

    def request(self, op: str, timeout: float, **args) -> dict:
        """Send one request and wait (at most ``timeout``) for its answer; raises what the agent reported."""
        label = self.conn.target.label
        self._id += 1
        self.proc.what = f"agent {op}"
        try:
            self.proc.send_line(json.dumps({"id": self._id, "op": op, **args}))
        except DeviceError:
            # The interpreter may be missing: the shell exits 127 before our request is written.
            channel = self.proc.channel
            if channel.exit_status_ready() and channel.recv_exit_status() == 127:
                raise _no_python(label, self.device) from None
            raise
        line = self.proc.read_line(timeout)
        if line is None:
            if self.proc.exit_code == 127:
                raise _no_python(label, self.device)
            tail = (self.proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise DeviceError(f"{label}: the agent exited with code {self.proc.exit_code} during `{op}` ({tail})")
        try:
            doc = json.loads(line)
        except ValueError:
            raise DeviceError(f"{label}: the agent answered `{op}` with something that is not JSON: {line[:200]!r}") from None
        if not doc.get("ok"):
            parse_output(json.dumps({"error": doc.get("error") or {}}), 1, where=label)  # raises its EdgecError
        return doc.get("result") or {}

    def close(self) -> None:
        try:
            if self.conn.alive and self.proc.exit_code is None:
                self.proc.send_line(json.dumps({"id": 0, "op": "quit"}))
        except DeviceError:
            pass
        self.proc.close()


def _no_python(label: str, device: Device) -> RuntimeMissingError:
    return RuntimeMissingError(
        f"{label}: `{device.python}` not found on the device; install Python 3.9+ there "
        "(Debian/Raspberry Pi OS: `sudo apt-get install -y python3 python3-numpy`) or set `python` in the inventory")


def bench_on_device(device: Device, bundle: Bundle, options: BenchOptions, ssh: SshOptions,
                    timeout: float, on_connect=None, on_stage=None) -> RemoteBench:
    """Connect (with retries), install the agent, check the runtime, push, and benchmark; never retried.

    One agent process answers ``info`` and ``bench`` (its ``serve`` mode), so Python and the runtime start once.
    ``on_connect(conn)`` lets the caller close the connection from another thread (deadline, Ctrl-C);
    ``on_stage(name, detail)`` reports progress.
    """
    stage = on_stage or (lambda *_: None)
    stage("connecting", "")
    with connect(device.ssh_target(), ssh) as conn:
        if on_connect:
            on_connect(conn)
        stage("agent", "")
        session = AgentSession(conn, device, install_agent(conn, agent_zipapp()))
        try:
            info = session.request("info", timeout=min(timeout, 300.0))
            check_runtime(info, bundle, device, conn.target.label)
            stage("pushing", "")
            report = push_bundle(conn, bundle,
                                 progress=lambda sent, total: stage("pushing", f"{100 * sent // total}%"))
            stage("benchmarking", "")
            result = session.request("bench", timeout=timeout, bundle=report.remote_dir, **options.as_dict())
            check_result(result, conn.target.label)
        finally:
            session.close()
        return RemoteBench(result, report.bytes_sent, report.remote_dir, info.get("agent_version"),
                           report.resumes)
