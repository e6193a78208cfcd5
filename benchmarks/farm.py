"""Farm benchmark: time to bench one bundle on 1, 8 and 32 network-namespace devices, and bytes of a repeat push.

Baseline: the same bench on one device, measured in the same run (after one uncounted warm-up device; the
median of 3 fresh single devices). Goals (issue 7): 8 devices in at most 1.5x the
time of one, every one of them ok (a failed device ends early and would flatter the time); a repeated push sends no model bytes. Each device count uses fresh devices, so every figure
includes the cold path (connect, agent install, runtime check, push, sha256 check on the device, benchmark).

Caveat that matters for reading the ratios: here every "device" is a namespace on the same 2-core machine, so the
agents' own CPU work (Python start, onnxruntime import, inference) competes for the same 2 cores; on real boards
each device brings its own CPU. ``cpu_s_per_device`` (host CPU time spent, divided by devices) shows that share.

Run: ``.venv/bin/python -m benchmarks.farm`` as root (namespaces, sshd). Writes build/bench/farm.json.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._goals import goal, print_goals

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "farm"))

COUNTS = (1, 8, 32)


class _TreeCpu:
    """CPU seconds used by this process and everything it starts (sshd servers, their sessions, the agents).

    A cgroup v1 cpuacct group (or the v2 group's cpu.stat) holds this process; children inherit it, so other
    users of the machine do not count. Falls back to the whole machine's busy time (/proc/stat).
    """

    def __init__(self):
        self.usage, self.group = None, None
        v1 = Path("/sys/fs/cgroup/cpuacct")
        try:
            if (v1 / "cpuacct.usage").exists():
                group = v1 / f"edgec-bench-{os.getpid()}"
                group.mkdir(exist_ok=True)
                (group / "cgroup.procs").write_text(str(os.getpid()))
                self.group = group
                self.usage = lambda: int((group / "cpuacct.usage").read_text()) / 1e9
        except OSError:
            self.usage = None
        self.scope = "process tree" if self.usage else "whole machine"
        if self.usage is None:
            self.usage = _machine_busy_seconds

    def __call__(self) -> float:
        return self.usage()

    def close(self) -> None:
        """Move this process back to the root group and remove ours (the servers are gone by now)."""
        if self.group is not None:
            (self.group.parent / "cgroup.procs").write_text(str(os.getpid()))
            try:
                self.group.rmdir()
            except OSError:
                pass


def _machine_busy_seconds() -> float:
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _make_bundle(root: Path):
    from farm_testbed import tiny_onnx  # the same tiny MatMul model the tests use

    from edgec import api

    source = tiny_onnx(root / "bench.onnx", 512, 3)  # ~1 MB of weights
    return api.compile(str(source), root / "bench.bundle", target="host", format="onnx")


def _bench(farm, start_index: int, count: int, bundle, ssh, key: Path, cpu_clock) -> dict:
    from edgec.deploy.farm import farm_bench
    from edgec.device_agent.options import BenchOptions

    servers = [farm.add(start_index + i) for i in range(count)]
    with open(ssh.known_hosts, "a") as handle:
        handle.writelines(s.host_key_line() for s in servers)
    devices = [s.device(key, f"dev{start_index + i}", python=sys.executable) for i, s in enumerate(servers)]
    cpu0, own0, t0 = cpu_clock(), time.process_time(), time.perf_counter()
    run = farm_bench(devices, bundle, store=None, ssh=ssh, parallel=count, device_timeout=600,
                     options=BenchOptions(runs=50, warmup=5, idle_s=0, power="none"))
    seconds = time.perf_counter() - t0
    cpu, own = cpu_clock() - cpu0, time.process_time() - own0
    failed = [o.error for o in run.outcomes if not o.ok]
    # All devices share this machine's cores: the run cannot beat (CPU seconds spent) / (cores).
    bound = cpu / (os.cpu_count() or 1)
    return {"devices": count, "seconds": seconds, "ok": count - len(failed), "failed": failed[:3],
            "cpu_s_per_device": cpu / count, "host_process_cpu_s_per_device": own / count, "cpu_bound_s": bound, "x_cpu_bound": seconds / bound}


def _repeat_push(server, bundle, ssh, key: Path) -> dict:
    from edgec.deploy.push import push_bundle
    from edgec.deploy.ssh import connect

    with open(ssh.known_hosts, "a") as handle:
        handle.write(server.host_key_line())
    with connect(server.device(key, "push").ssh_target(), ssh) as conn:
        first = push_bundle(conn, bundle)
        again = push_bundle(conn, bundle)
    return {"model_bytes": bundle.model_path.stat().st_size, "first_push_bytes": first.bytes_sent,
            "repeat_push_bytes": again.bytes_sent, "first_push_s": first.seconds, "repeat_push_s": again.seconds}


def main(argv: list[str] | None = None) -> dict:
    from farm_testbed import NetnsFarm, have_root_tools, make_key

    from edgec.deploy.ssh import SshOptions

    reason = have_root_tools()
    if reason:
        return {"skipped": reason}
    cpu_clock = _TreeCpu()
    work = Path(tempfile.mkdtemp(prefix="edgec-bench-farm-"))
    os.environ.setdefault("EDGEC_HOME", str(work / "edgec_home"))
    key = make_key(work / "id_ed25519")
    ssh = SshOptions(known_hosts=str(work / "known_hosts"), ssh_config=str(work / "none"), connect_timeout=20)
    bundle = _make_bundle(work)
    from edgec.deploy.remote import agent_zipapp

    agent_zipapp()  # built once, outside the timed runs
    farm = NetnsFarm(work, Path(f"{key}.pub").read_text())
    try:
        rows, index = [], 0
        _bench(farm, index, 1, bundle, ssh, key, cpu_clock)  # warm-up: page cache, first imports; not counted
        index += 1
        for count in COUNTS:
            # The single-device baseline is the median of 3 (fresh devices each); larger counts run once.
            tries = [_bench(farm, index + k * count, count, bundle, ssh, key, cpu_clock)
                     for k in range(3 if count == 1 else 1)]
            rows.append(sorted(tries, key=lambda r: r["seconds"])[len(tries) // 2])
            index += count * len(tries)
        push = _repeat_push(farm.add(index), bundle, ssh, key)
    finally:
        farm.close()
        cpu_clock.close()
    base = rows[0]["seconds"]
    for row in rows:
        row["ratio_vs_1"] = row["seconds"] / base
    one, eight = rows[0], rows[1]
    # A failed device finishes early and would flatter the wall time: the goal counts only when all 8 succeeded.
    goals = [goal("8 devices at most 1.5x the time of one, every device ok",
                  one["ok"] == 1 and eight["ok"] == eight["devices"] and eight["ratio_vs_1"] <= 1.5,
                  f"{eight['ratio_vs_1']:.2f}x, {eight['ok']}/{eight['devices']} ok (baseline {one['ok']}/1 ok)"),
             goal("a repeat push sends no model bytes", push["repeat_push_bytes"] == 0,
                  f"{push['repeat_push_bytes']} B")]
    report = {"bench": rows, "repeat_push": push, "cpu_measured_over": cpu_clock.scope, "cores": os.cpu_count(),
              "goals": goals}
    _print(report)
    out = REPO / "build" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "farm.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def _print(report: dict) -> None:
    print(f"{'devices':>8} {'seconds':>8} {'x one':>7} {'ok':>4} {'cpu s/device':>13} {'cpu-bound s':>12} "
          f"{'x bound':>8}")
    for row in report["bench"]:
        print(f"{row['devices']:>8} {row['seconds']:>8.2f} {row['ratio_vs_1']:>7.2f} {row['ok']:>4} "
              f"{row['cpu_s_per_device']:>13.2f} {row['cpu_bound_s']:>12.2f} {row['x_cpu_bound']:>8.2f}")
    print(f"(cpu measured over the {report['cpu_measured_over']}, {report['cores']} cores)")
    push = report["repeat_push"]
    print(f"push of a {push['model_bytes']} B model: first {push['first_push_bytes']} B in {push['first_push_s']:.2f} s,"
          f" repeat {push['repeat_push_bytes']} B in {push['repeat_push_s']:.3f} s")
    print_goals(report["goals"])


if __name__ == "__main__":
    main(sys.argv[1:])
