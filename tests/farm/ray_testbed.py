"""A real Ray cluster on this machine for tests: a head and worker nodes as separate process groups.

Every node is started with ``ray start --block`` in its own session, bound to 127.0.0.1, with a small object
store; it is stopped by signalling its process group (never ``ray stop``, which ends every Ray process of the
machine, other tests' included).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from farm_testbed import descendants, free_port

__all__ = ["RayCluster", "free_port"]

RAY = str(Path(sys.executable).with_name("ray"))


@dataclass
class RayCluster:
    """Head + workers; ``address`` is the GCS address drivers pass to ``--cluster``."""

    root: Path
    env: dict = field(default_factory=dict)  # extra environment of every node (HOME, EDGEC_HOME of the tests)
    port: int = field(default_factory=free_port)
    nodes: dict = field(default_factory=dict)  # name -> Popen

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _env(self) -> dict:
        env = {**os.environ, **self.env}
        env.update(RAY_USAGE_STATS_ENABLED="0", RAY_DEDUP_LOGS="0",
                   # Node death is noticed within ~6 s instead of ~30 s (the kill test waits for it).
                   RAY_health_check_period_ms="1000", RAY_health_check_failure_threshold="5",
                   RAY_health_check_initial_delay_ms="1000")
        return env

    def start_node(self, name: str, resources: dict, cpus: int = 1, head: bool = False) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        argv = [RAY, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus),
                "--resources", json.dumps(resources), "--object-store-memory", str(120 * 2**20),
                "--disable-usage-stats",
                # Every node's agents on free ports: several nodes (and other tests' clusters) share this machine.
                "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
                "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())]
        if head:
            # A short temp dir of its own: Ray's AF_UNIX socket paths under it must stay below 108 bytes, which a
            # pytest-xdist tmp_path (/tmp/pytest-of-root/pytest-N/popen-gwK/...) exceeds.
            self.temp = Path(tempfile.mkdtemp(prefix="edgec-ray-", dir="/tmp"))
            argv += ["--head", "--port", str(self.port), "--include-dashboard", "false",
                     "--temp-dir", str(self.temp), "--ray-client-server-port", str(free_port())]
        else:
            argv += ["--address", self.address]
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self._env(), start_new_session=True)
        proc.log = log
        self.nodes[name] = proc

    def wait_nodes(self, count: int, timeout: float = 300.0) -> None:
        """Wait until ``count`` nodes are alive in the cluster (asked through a throwaway driver)."""
        code = ("import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False);"
                "print(sum(1 for n in ray.nodes() if n['Alive']))")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.nodes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"ray node {name} exited: {(self.root / f'{name}.log').read_text()[-2000:]}")
            out = subprocess.run([sys.executable, "-c", code, self.address], capture_output=True, text=True,
                                 env=self._env(), timeout=timeout)
            if out.returncode == 0 and out.stdout.strip().isdigit() and int(out.stdout.strip()) >= count:
                return
            time.sleep(1.0)
        raise RuntimeError(f"the Ray cluster did not reach {count} nodes in {timeout:.0f} s")

    def processes(self, name: str) -> dict[int, str]:
        """pid -> command line of every process of a node (raylet, its workers, ...)."""
        out = {}
        for pid in [self.nodes[name].pid, *descendants(self.nodes[name].pid)]:
            try:
                out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                pass
        return out

    def node_ids(self) -> dict[str, str]:
        """resource name (e.g. ``site:lab-b``) -> node id, for the alive nodes."""
        code = ("import ray,sys,json; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False);"
                "print(json.dumps({k: n['NodeID'] for n in ray.nodes() if n['Alive'] for k in n['Resources']}))")
        out = subprocess.run([sys.executable, "-c", code, self.address], capture_output=True, text=True,
                             env=self._env(), timeout=120, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def kill_node(self, name: str) -> None:
        """SIGKILL a node and everything it started: the machine died."""
        proc = self.nodes.pop(name)
        for pid in [*descendants(proc.pid), proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
        proc.log.close()

    def stop(self) -> None:
        for name in list(self.nodes):
            self.kill_node(name)
        if getattr(self, "temp", None):
            shutil.rmtree(self.temp, ignore_errors=True)
