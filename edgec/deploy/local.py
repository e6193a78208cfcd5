"""The device agent on this machine (``--device local``): an ``AgentRunner`` that runs the agent zipapp with
this Python as a subprocess, the same file and code path as on a device, only without SSH."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

from edgec.device_agent import build_zipapp
from edgec.device_agent.client import bench_argv, parse_output, parse_serve, serve_input
from edgec.device_agent.options import BenchOptions
from edgec.errors import DeviceTimeoutError
from edgec.settings import LOCAL_DEVICE, agent_cache_dir

__all__ = ["LocalAgent"]


class LocalAgent:
    """The agent zipapp run by ``python`` on this machine; every call is a process of its own.

    ``quiet``: the agent's progress lines are captured instead of going to this process's stderr.
    """

    name = LOCAL_DEVICE
    target = None  # this machine's profile is detected (``host``), not named by an inventory
    last_push = None  # nothing is pushed: bundles are used where they are

    def __init__(self, python: str = sys.executable, quiet: bool = True, timeout: float = 3600.0):
        self.python, self.quiet, self.timeout = python, quiet, timeout
        self.address = platform.node()
        self.agent = str(build_zipapp(agent_cache_dir()))

    def __enter__(self) -> LocalAgent:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def _run(self, argv: list[str], stdin: str | None = None, timeout: float | None = None,
             quiet: bool = True) -> subprocess.CompletedProcess:
        limit = timeout or self.timeout
        try:
            return subprocess.run(argv, input=stdin, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE if quiet else None, text=True, check=False, timeout=limit)
        except subprocess.TimeoutExpired:
            raise DeviceTimeoutError(f"local agent: `{' '.join(argv[2:4])}` did not finish within {limit:g} s; "
                                     "stopped") from None

    def info(self) -> dict:
        done = self._run([self.python, self.agent, "info"], timeout=min(self.timeout, 120.0))
        return parse_output(done.stdout, done.returncode, done.stderr, where="local agent")

    def place(self, bundle: Path) -> str:
        return str(Path(bundle).resolve())  # used where it is; the agent checks it

    def bench(self, placed: str, options: BenchOptions, fresh: bool = False) -> dict:
        done = self._run(bench_argv(self.agent, placed, options, python=self.python), quiet=self.quiet)
        return parse_output(done.stdout, done.returncode, done.stderr or "", where="local agent")

    def serve(self, requests: list[dict]) -> list[dict]:
        done = self._run([self.python, self.agent, "serve"], stdin=serve_input(requests))
        return parse_serve(done.stdout, len(requests), "local agent")
