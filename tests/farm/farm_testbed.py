"""A device farm on this machine: real sshd processes on loopback ports and in network namespaces.

Each server has its own host key, config and home directory (``SetEnv HOME`` and ``internal-sftp -d``, so
devices do not share ``~/.edgec``). Everything is torn down by PID and by the names this module created;
nothing is looked up by process name. Faults: kill, link down, packet loss (nftables), slow link (tc tbf),
a small tmpfs home (disk full), a CPU quota (cgroup v1 or v2).
"""

from __future__ import annotations

import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgec.deploy.inventory import Device

REPO = Path(__file__).resolve().parents[2]
SSHD = "/usr/sbin/sshd"
# The device Python for loopback/namespace devices: they share this machine's file system, so the venv's
# interpreter (numpy + onnxruntime) is "a device with the runtime"; /usr/bin/python3 has neither.
DEVICE_PYTHON = sys.executable
BARE_PYTHON = "/usr/bin/python3"




def sh(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=60, **kw)


def have_root_tools() -> str | None:
    """A reason the farm cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, sshd on loopback as root)"
    if not os.path.exists(SSHD):
        return "openssh-server is not installed (run scripts/install-system.sh)"
    return None


def make_key(path: Path) -> Path:
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgec-test", "-f", str(path))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SshServer:
    """One sshd: a device. ``netns`` runs it in a namespace; ``disk_mb`` gives it a small tmpfs home."""

    root: Path
    client_pub: str
    address: str = "127.0.0.1"
    port: int = 0
    netns: str | None = None
    disk_mb: int | None = None
    chroot: Path | None = None
    setup: str = ""  # shell run in the device's own mount namespace before sshd starts ("mount ... && ")
    proc: subprocess.Popen | None = None
    log: list = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.root / "home"

    def start(self) -> SshServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(exist_ok=True)
        self.port = self.port or (22 if self.netns else free_port())
        key = self.root / "host_ed25519"
        if not key.exists():
            make_key(key)
        (self.root / "authorized_keys").write_text(self.client_pub)
        inner = self._inner_root()
        config = self.root / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress {self.address}\nHostKey {inner}/host_ed25519\n"
            f"PidFile {inner}/sshd.pid\nAuthorizedKeysFile {inner}/authorized_keys\n"
            "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\nLogLevel ERROR\nMaxStartups 200\nMaxSessions 100\n"
            f"SetEnv HOME={inner}/home\nSubsystem sftp internal-sftp -d {inner}/home\n"
        )
        os.makedirs("/run/sshd", exist_ok=True)
        with open(self.root / "sshd.log", "ab") as log:
            self.proc = subprocess.Popen(self._command(inner, config), stdout=subprocess.DEVNULL, stderr=log,
                                         start_new_session=True)
        self._wait_listening()
        return self

    def _inner_root(self) -> str:
        """The server's directory as seen by sshd (inside the chroot for the arm64 board)."""
        if self.chroot is None:
            return str(self.root)
        return "/" + str(self.root.relative_to(self.chroot))

    def _command(self, inner: str, config: Path) -> list[str]:
        sshd = f"/usr/sbin/sshd -D -e -f {inner}/sshd_config"
        setup = self.setup
        if self.disk_mb:
            # Mounted in the device's own mount namespace before sshd starts, so only it sees the small disk.
            setup += f"mount -t tmpfs -o size={self.disk_mb}m edgec-disk {self.home} && "
        if self.chroot is not None:
            r = self.chroot
            setup += (f"mount -t proc proc {r}/proc && mount --bind /sys {r}/sys && mount --rbind /dev {r}/dev && "
                      f"mount --bind {r}/etc/edgec-cpuinfo {r}/proc/cpuinfo && mkdir -p {r}/run/sshd && ")
            sshd = f"chroot {r} {sshd}"
        if self.netns:
            return ["ip", "netns", "exec", self.netns, "sh", "-c", f"{setup}exec {sshd}"]
        if setup:
            return ["unshare", "-m", "--propagation", "private", "sh", "-c", f"{setup}exec {sshd}"]
        return sshd.split()

    def _wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()}")
            try:  # namespace devices are reachable from here through the bridge
                with socket.create_connection((self.address, self.port), timeout=0.5) as sock:
                    if sock.recv(4) == b"SSH-":
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"sshd on {self.address}:{self.port} did not start listening")

    def host_key_line(self) -> str:
        pub = (self.root / "host_ed25519.pub").read_text().split()
        name = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{name} {pub[0]} {pub[1]}\n"

    def kill(self) -> None:
        """Kill sshd and every session it started (the device dies)."""
        if self.proc is None:
            return
        if self.netns:
            for pid in sh("ip", "netns", "pids", self.netns, check=False).stdout.split():
                _kill(int(pid))
        else:  # each session sshd calls setsid(): find them as descendants of our sshd's PID
            for pid in descendants(self.proc.pid):
                _kill(pid)
        _kill(self.proc.pid)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.kill()
        if self.disk_mb or self.chroot or self.setup:
            pass  # those mounts lived in the server's own mount namespace and went with it
        self.proc = None

    def device(self, key: Path, name: str, **extra) -> Device:
        return Device(name=name, host=self.address, port=self.port, user="root", key=str(key), **extra)


def descendants(root: int) -> list[int]:
    """PIDs of every process below ``root`` (by parent PID in /proc), deepest last."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class NetnsFarm:
    """A bridge on a private /24 in the root namespace; one namespace per device, with its own sshd."""

    def __init__(self, workdir: Path, client_pub: str):
        self.workdir, self.client_pub = workdir, client_pub
        self.tag = secrets.token_hex(2)
        self.bridge = f"ecbr{self.tag}"
        self.subnet = self._pick_subnet()
        self.servers: list[SshServer] = []
        self.veths: dict[str, str] = {}
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")

    def _pick_subnet(self) -> str:
        used = sh("ip", "-4", "route", "show").stdout
        for _ in range(100):
            prefix = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}"
            if f"{prefix}." not in used:
                return prefix
        raise RuntimeError("no free private /24 for the test farm")

    def check_route(self, address: str) -> None:
        """Refuse to send anything unless the address routes to this farm's own bridge."""
        route = sh("ip", "route", "get", address).stdout
        if f"dev {self.bridge}" not in route:
            raise RuntimeError(f"{address} does not route to the test bridge {self.bridge}: {route}")

    def add(self, index: int, **server_args) -> SshServer:
        ns, veth = f"ec{self.tag}d{index}", f"ec{self.tag}v{index}"
        address = f"{self.subnet}.{index + 10}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", veth, "master", self.bridge, "up")
        sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        self.veths[ns] = veth
        self.check_route(address)
        root = server_args.pop("root", self.workdir / ns)
        server = SshServer(root=root, client_pub=self.client_pub, address=address, netns=ns, **server_args)
        self.servers.append(server)
        return server.start()

    def link(self, server: SshServer, up: bool) -> None:
        sh("ip", "link", "set", self.veths[server.netns], "up" if up else "down")

    def packet_loss(self, server: SshServer, percent: int) -> None:
        drop = f"numgen random mod 100 < {percent} counter drop"
        rules = (f"table inet edgecloss {{\n chain i {{ type filter hook input priority 0; {drop}; }}\n"
                 f" chain o {{ type filter hook output priority 0; {drop}; }}\n}}\n")
        subprocess.run(["ip", "netns", "exec", server.netns, "nft", "-f", "-"], input=rules, text=True, check=True,
                       capture_output=True, timeout=30)

    def dropped_packets(self, server: SshServer) -> int:
        out = sh("ip", "netns", "exec", server.netns, "nft", "list", "table", "inet", "edgecloss").stdout
        return sum(int(m) for m in re.findall(r"counter packets (\d+)", out))

    def rate_limit(self, server: SshServer, rate: str = "4mbit") -> None:
        sh("tc", "qdisc", "add", "dev", self.veths[server.netns], "root", "tbf", "rate", rate, "burst", "32kbit",
           "latency", "400ms")

    def close(self) -> None:
        for server in self.servers:
            server.stop()
            for pid in sh("ip", "netns", "pids", server.netns, check=False).stdout.split():
                _kill(int(pid))
            sh("ip", "link", "del", self.veths[server.netns], check=False)
            sh("ip", "netns", "del", server.netns, check=False)
        sh("ip", "link", "del", self.bridge, check=False)


class CpuQuota:
    """Put a process (and the sessions it starts later) under a CPU quota: cgroup v2 ``cpu.max`` when the host
    has a v2 cpu controller, else v1 ``cpu.cfs_quota_us``."""

    def __init__(self, pid: int, percent: int):
        self.name = f"edgec-test-{secrets.token_hex(3)}"
        period, quota = 100_000, 100_000 * percent // 100
        v2 = Path("/sys/fs/cgroup/cgroup.controllers")
        if v2.exists() and "cpu" in v2.read_text().split():
            self.path, self.version = Path("/sys/fs/cgroup") / self.name, 2
            self.path.mkdir()
            (self.path / "cpu.max").write_text(f"{quota} {period}")
        else:
            self.path, self.version = Path("/sys/fs/cgroup/cpu") / self.name, 1
            self.path.mkdir()
            (self.path / "cpu.cfs_period_us").write_text(str(period))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        (self.path / "cgroup.procs").write_text(str(pid))
        self.pid = pid

    def usage_seconds(self) -> float:
        if self.version == 1:
            return int((self.path / "cpuacct.usage").read_text()) / 1e9 if (self.path / "cpuacct.usage").exists() else 0
        for line in (self.path / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec"):
                return int(line.split()[1]) / 1e6
        return 0.0

    def throttled(self) -> int:
        """How many periods the group was throttled in (proves the quota bit)."""
        for line in (self.path / "cpu.stat").read_text().splitlines():
            if line.startswith(("nr_throttled", "throttled")):
                return int(line.split()[1])
        return 0

    def close(self) -> None:
        parent = self.path.parent / "cgroup.procs"
        for pid in (self.path / "cgroup.procs").read_text().split():
            try:
                parent.write_text(pid)
            except OSError:
                pass
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)


def trust(server: SshServer, opts) -> None:
    with open(opts.known_hosts, "a") as handle:
        handle.write(server.host_key_line())


def tiny_onnx(path: Path, n: int, seed: int) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _user_env(home: Path) -> dict:
    env = {**os.environ, "HOME": str(home), "EDGEC_HOME": str(home / ".edgec"), "PYTHONPATH": str(REPO)}
    env.pop("SSH_AUTH_SOCK", None)
    return env


def edgec(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``edgec ARGS`` as a user with HOME ``home`` (its ~/.ssh holds the key; no ssh-agent) would run it."""
    return subprocess.run([sys.executable, "-m", "edgec", *args], env=_user_env(home), cwd=home, capture_output=True,
                          text=True, timeout=timeout)


def edgec_process(home: Path, *args: str) -> subprocess.Popen:
    """``edgec ARGS`` running in the background (output piped: not a terminal), for commands that keep going."""
    return subprocess.Popen([sys.executable, "-m", "edgec", *args], env=_user_env(home), cwd=home, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def inventory(home: Path, rows: list[tuple]) -> Path:
    """``devices.toml`` in ``home`` for (name, server, python) rows, every device an rpi4 tagged lab."""
    path = home / "devices.toml"
    path.write_text("".join(f'[[device]]\nname = "{name}"\nhost = "127.0.0.1"\nport = {server.port}\nuser = "root"\n'
                            f'target = "rpi4"\ntags = ["lab"]\npython = "{python}"\n' for name, server, python in rows))
    return path
