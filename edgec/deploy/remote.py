"""Run the device agent on one device over SSH: install it, check the runtime, push, benchmark.

The agent is the zipapp from ``edgec.device_agent.build_zipapp`` (see notes/AGENT_CONTRACT.md), run with the
device's own Python (``python`` in the inventory). Everything it prints on stdout is JSON; an error document
``{"error": {"type", "message"}}`` becomes the same EdgecError subclass here, its message prefixed with the
device. A benchmark is never retried: a connection lost half way is reported as such.
"""

from __future__ import annotations

import functools
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgec.bundle import Bundle
from edgec.deploy.inventory import Device, edgec_home
from edgec.deploy.push import install_agent, push_bundle
from edgec.deploy.ssh import Connection, SshOptions, connect
from edgec.device_agent.client import bench_argv, parse_output
from edgec.device_agent.options import BenchOptions
from edgec.errors import DeviceError, RuntimeMissingError

__all__ = ["RemoteBench", "agent_call", "agent_zipapp", "bench_on_device", "check_runtime",
           "device_info", "install_command"]

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
        raise RuntimeMissingError(
            f"{conn.target.label}: `{device.python}` not found on the device; install Python 3.9+ there "
            "(Debian/Raspberry Pi OS: `sudo apt-get install -y python3 python3-numpy`) or set `python` in the inventory")
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


def bench_on_device(device: Device, bundle: Bundle, options: BenchOptions, ssh: SshOptions,
                    timeout: float, on_connect=None, on_stage=None) -> RemoteBench:
    """Connect (with retries), install the agent, check the runtime, push, and benchmark; never retried.

    ``on_connect(conn)`` lets the caller close the connection from another thread (deadline, Ctrl-C);
    ``on_stage(name, detail)`` reports progress.
    """
    stage = on_stage or (lambda *_: None)
    stage("connecting", "")
    with connect(device.ssh_target(), ssh) as conn:
        if on_connect:
            on_connect(conn)
        label = conn.target.label
        stage("agent", "")
        agent = install_agent(conn, agent_zipapp())
        info = device_info(conn, device, agent)
        check_runtime(info, bundle, device, label)
        stage("pushing", "")
        report = push_bundle(conn, bundle, progress=lambda sent, total: stage("pushing", f"{100 * sent // total}%"))
        stage("benchmarking", "")
        argv = bench_argv(agent, report.remote_dir, options, python=device.python)
        result = agent_call(conn, device, argv, timeout=timeout, what="agent bench")
        return RemoteBench(result, report.bytes_sent, report.remote_dir, info.get("agent_version"))
