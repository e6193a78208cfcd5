"""The device agent on one device over SSH: ``SshAgent``, the SSH ``AgentRunner`` (install, info, push, bench).

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
from pathlib import Path

from edgec.bundle import Bundle
from edgec.deploy.inventory import Device
from edgec.deploy.push import PushReport, install_agent, push_bundle
from edgec.deploy.ssh import Connection, SshOptions, connect
from edgec.device_agent import build_zipapp
from edgec.device_agent.client import bench_argv, check_result, parse_output, parse_serve, serve_input
from edgec.device_agent.options import BenchOptions
from edgec.errors import DeviceError, RuntimeMissingError
from edgec.runtimes import runtime_for_format
from edgec.settings import agent_cache_dir

__all__ = ["AgentSession", "SshAgent", "agent_call", "agent_zipapp", "check_runtime", "install_command"]

# The agent session ends itself when no line came from us for this long (a link that died without sshd noticing:
# otherwise its benchmark would run on and skew the device's next measurement); we send one every quarter of it.
HEARTBEAT_S = 60.0

# What to pip-install on a device for each runtime (the agent also needs numpy).
_PIP = {"onnxruntime": "numpy onnxruntime", "litert": "numpy ai-edge-litert"}


@functools.lru_cache(maxsize=1)
def agent_zipapp() -> Path:
    """Build (once per process) the agent zipapp; its name carries its content hash."""
    cache = agent_cache_dir()  # the same place `edgec bench --device local` builds it
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


def check_runtime(info: dict, bundle: Bundle, device: Device, label: str) -> str:
    """The runtime the bundle needs; RuntimeMissingError with the install command when the device lacks it."""
    runtime = runtime_for_format(bundle.format)
    if not (info.get("runtimes") or {}).get(runtime):
        raise RuntimeMissingError(
            f"{label}: {runtime} is not installed for {device.python} (Python {info.get('python', '?')}); "
            f"install it on the device with `{install_command(device, runtime)}` (or in a virtualenv, then "
            "set `python` in the inventory to its interpreter)")
    return runtime


class AgentSession:
    """One ``serve`` process of the agent on the device: ``info`` then ``bench`` without starting Python twice."""

    def __init__(self, conn: Connection, device: Device, agent: str):
        self.conn, self.device, self._id = conn, device, 0
        self.client = conn.client  # the SSH link this process lives on: a reconnect (a push resuming) ends it
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


class SshAgent:
    """The agent on an SSH device, an ``AgentRunner``: connect (with retries) and install the agent on entry.

    ``info`` and non-fresh ``bench`` share one ``serve`` process (Python and the runtime start once); ``place``
    checks the device has the bundle's runtime, then pushes the bundle (content-addressed: an unchanged bundle
    sends nothing). ``on_connect(conn)`` lets the caller close the connection from another thread (deadline,
    Ctrl-C); ``on_stage(name, detail)`` reports progress. A benchmark is never retried.
    """

    def __init__(self, device: Device, ssh: SshOptions | None = None, timeout: float = 600.0, on_connect=None,
                 on_stage=None):
        self.device, self.ssh, self.timeout = device, ssh or SshOptions(), timeout
        self.name, self.address, self.target = device.name, device.address, device.target
        self._on_connect, self._stage = on_connect, on_stage or (lambda *_: None)
        self.conn: Connection | None = None
        self.agent = ""
        self.last_push: PushReport | None = None
        self._session: AgentSession | None = None
        self._info: dict | None = None

    def __enter__(self) -> SshAgent:
        self._stage("connecting", "")
        self.conn = connect(self.device.ssh_target(), self.ssh)
        try:
            if self._on_connect:
                self._on_connect(self.conn)
            self._stage("agent", "")
            self.agent = install_agent(self.conn, agent_zipapp())
        except BaseException:
            self.conn.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._session is not None:
                self._session.close()
        finally:
            self.conn.__exit__(*exc)

    def session(self) -> AgentSession:
        if self._session is not None and self._session.client is not self.conn.client:
            # The push reconnected to resume an upload: this serve process died with the old link (a bench on it
            # failed with "Socket is closed" over a lossy link). Start another on the new one.
            self._session.proc.close()
            self._session = None
        if self._session is None:
            self._session = AgentSession(self.conn, self.device, self.agent)
        return self._session

    def info(self) -> dict:
        if self._info is None:
            self._info = self.session().request("info", timeout=min(self.timeout, 300.0))
        return self._info

    def place(self, bundle: Path | Bundle) -> str:
        opened = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
        check_runtime(self.info(), opened, self.device, self.conn.target.label)
        self._stage("pushing", "")
        self.last_push = push_bundle(self.conn, opened,
                                     progress=lambda sent, total: self._stage("pushing", f"{100 * sent // total}%"))
        return self.last_push.remote_dir

    def bench(self, placed: str, options: BenchOptions, fresh: bool = False) -> dict:
        self._stage("benchmarking", "")
        if fresh:  # a process of its own: its peak RSS is this bundle's alone
            argv = bench_argv(self.agent, placed, options, python=self.device.python)
            return agent_call(self.conn, self.device, argv, timeout=self.timeout, what="agent bench (fresh)")
        result = self.session().request("bench", timeout=self.timeout, bundle=placed, **options.as_dict())
        return check_result(result, self.conn.target.label)

    def serve(self, requests: list[dict]) -> list[dict]:
        """The batch goes up as a file and runs as ``serve < file``: no link needs to stay up between requests."""
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
            handle.write(serve_input(requests))
        remote = f"{self.conn.home()}/.edgec/serve-requests.jsonl"
        try:
            self.conn.put(handle.name, remote)
        finally:
            Path(handle.name).unlink()
        command = " ".join(shlex.quote(a) for a in (self.device.python, self.agent, "serve"))
        result = self.conn.run(f"{command} < {shlex.quote(remote)}", timeout=self.timeout, what="agent serve (batch)")
        if result.exit_code == 127:
            raise _no_python(self.conn.target.label, self.device)
        return parse_serve(result.stdout, len(requests), self.conn.target.label)
