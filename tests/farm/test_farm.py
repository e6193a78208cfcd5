"""Farm benches against real sshd devices with the real agent: failures, deadlines, throttling, storage."""

from __future__ import annotations

import io
import threading
import time
from dataclasses import replace
from pathlib import Path

from farm_testbed import BARE_PYTHON, CpuQuota, trust

from edgec.deploy.farm import FarmProgress, farm_bench
from edgec.deploy.results import ResultsStore
from edgec.device_agent.options import BenchOptions

QUICK = BenchOptions(runs=20, warmup=2, idle_s=0, power="none")


class KillDuringBench(FarmProgress):
    """Kills one device ``delay`` seconds after its benchmark started (the device dies mid-run)."""

    def __init__(self, devices, victim: str, action, delay: float = 1.0):
        super().__init__(devices, enabled=False)
        self.victim, self.action, self.delay, self.fired = victim, action, delay, False

    def stage(self, name, stage, detail=""):
        super().stage(name, stage, detail)
        if name == self.victim and stage == "benchmarking" and not self.fired:
            self.fired = True
            threading.Timer(self.delay, self.action).start()


def test_eight_devices_one_killed_mid_run_gives_seven_results_and_one_failure(
        netns_farm, client_key, ssh_opts, bundles, device_python, tmp_path):
    servers = [netns_farm.add(i) for i in range(8)]
    for server in servers:
        trust(server, ssh_opts)
    devices = [s.device(client_key, f"dev{i}", python=device_python, target="rpi4") for i, s in enumerate(servers)]
    victim = servers[3]
    store = ResultsStore(tmp_path / "results.db")
    timeout = 90.0
    start = time.monotonic()
    run = farm_bench(devices, bundles["small"], store=store, ssh=ssh_opts, parallel=8, device_timeout=timeout,
                     options=BenchOptions(duration_s=4.0, warmup=2, idle_s=0, power="none"),
                     progress=KillDuringBench(devices, "dev3", victim.kill))
    elapsed = time.monotonic() - start
    assert elapsed < timeout
    by_name = {o.device.name: o for o in run.outcomes}
    assert sorted(by_name) == [f"dev{i}" for i in range(8)]
    failed = [o for o in run.outcomes if not o.ok]
    assert [o.device.name for o in failed] == ["dev3"]
    assert failed[0].error["type"] == "DeviceError"
    assert "connection lost during `agent bench`" in failed[0].error["message"]
    rows = store.list(farm_run=run.farm_run)
    assert sorted(r["status"] for r in rows) == ["error"] + ["ok"] * 7
    assert all(r["latency_ms_p50"] > 0 for r in rows if r["status"] == "ok")
    # Never retried: one agent session was started on the victim (a retry would need another).
    calls = (victim.home / "agent-calls.log").read_text().splitlines()
    assert sum(" serve --heartbeat " in line for line in calls) == 1


def test_a_device_that_goes_silent_is_stopped_at_the_deadline(netns_farm, client_key, ssh_opts, bundles,
                                                               device_python, tmp_path):
    servers = [netns_farm.add(i) for i in range(2)]
    for server in servers:
        trust(server, ssh_opts)
    devices = [s.device(client_key, f"dev{i}", python=device_python) for i, s in enumerate(servers)]
    store = ResultsStore(tmp_path / "results.db")
    start = time.monotonic()
    run = farm_bench(devices, bundles["small"], store=store, ssh=ssh_opts, parallel=2, device_timeout=12,
                     options=BenchOptions(duration_s=3.0, warmup=2, idle_s=0, power="none"),
                     progress=KillDuringBench(devices, "dev1", lambda: netns_farm.link(servers[1], up=False), 0.5))
    assert time.monotonic() - start < 12 + 30  # returned after the 12 s deadline, not hung on the silent link
    outcome = {o.device.name: o for o in run.outcomes}
    assert outcome["dev0"].ok
    assert outcome["dev1"].error["type"] == "DeviceTimeoutError"
    assert "within the device timeout of 12 s" in outcome["dev1"].error["message"]
    assert [r["error_type"] for r in store.list(device="dev1")] == ["DeviceTimeoutError"]


def test_unknown_host_and_missing_runtime_are_per_device_failures(sshd, client_key, ssh_opts, bundles,
                                                                   device_python, tmp_path):
    good, unknown, bare = sshd("good"), sshd("unknown"), sshd("bare")
    trust(good, ssh_opts)
    trust(bare, ssh_opts)
    devices = [good.device(client_key, "good", python=device_python),
               unknown.device(client_key, "unknown", python=device_python),
               bare.device(client_key, "bare", python=BARE_PYTHON),
               bare.device(client_key, "no-python", python="/opt/nowhere/python3")]
    run = farm_bench(devices, bundles["small"], store=ResultsStore(tmp_path / "r.db"), ssh=ssh_opts,
                     options=QUICK)
    outcome = {o.device.name: o for o in run.outcomes}
    assert outcome["good"].ok
    assert outcome["unknown"].error["type"] == "HostKeyError"
    assert "--trust-new-host" in outcome["unknown"].error["message"]
    assert outcome["bare"].error["type"] == "RuntimeMissingError"
    assert f"`{BARE_PYTHON} -m pip install numpy onnxruntime`" in outcome["bare"].error["message"]
    assert outcome["no-python"].error["type"] == "RuntimeMissingError"
    assert "`/opt/nowhere/python3` not found on the device" in outcome["no-python"].error["message"]


def test_cpu_throttled_device_still_benchmarks(sshd, client_key, ssh_opts, bundles, device_python, tmp_path):
    server = sshd("slow-cpu")
    trust(server, ssh_opts)
    quota = CpuQuota(server.proc.pid, percent=10)  # new sessions inherit the cgroup of sshd
    try:
        device = server.device(client_key, "slow-cpu", python=device_python)
        run = farm_bench([device], bundles["big"], store=None, ssh=ssh_opts,
                         options=BenchOptions(runs=200, warmup=5, idle_s=0, power="none"))
        assert run.outcomes[0].ok, run.outcomes[0].error
        assert quota.throttled() > 0  # the agent really ran under the quota
    finally:
        quota.close()


def test_results_are_recorded_as_each_device_finishes(sshd, client_key, ssh_opts, bundles, device_python, tmp_path):
    fast, slow = sshd("fast"), sshd("slow")
    for server in (fast, slow):
        trust(server, ssh_opts)
    db = tmp_path / "r.db"
    seen_while_running = []

    class Watch(FarmProgress):
        """Holds "slow" back as it starts benchmarking until "fast"'s row is in the database: a farm that stored
        results only at the end would never show it, and the wait runs out (no sleep decides who is first)."""

        def stage(self, name, stage, detail=""):
            super().stage(name, stage, detail)
            if name == "slow" and stage == "benchmarking":
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not seen_while_running:
                    with ResultsStore(db) as store:
                        seen_while_running.extend(r["device"] for r in store.list())
                    time.sleep(0.1)

    devices = [fast.device(client_key, "fast", python=device_python),
               slow.device(client_key, "slow", python=device_python)]
    run = farm_bench(devices, bundles["small"], store=ResultsStore(db), ssh=ssh_opts, options=QUICK, parallel=2,
                     progress=Watch(devices, enabled=False))
    assert all(o.ok for o in run.outcomes)
    assert seen_while_running == ["fast"]


def test_progress_display_redraws_in_place_only_when_enabled(sshd, client_key, ssh_opts, bundles, device_python):
    server = sshd()
    trust(server, ssh_opts)
    device = server.device(client_key, "d1", python=device_python)
    shown, hidden = io.StringIO(), io.StringIO()
    farm_bench([device], bundles["small"], store=None, ssh=ssh_opts, options=QUICK,
               progress=FarmProgress([device], enabled=True, stream=shown))
    farm_bench([device], bundles["small"], store=None, ssh=ssh_opts, options=QUICK,
               progress=FarmProgress([device], enabled=False, stream=hidden))
    text = shown.getvalue()
    assert "\x1b[2K" in text and "d1" in text and "ok" in text and "mean" in text
    assert hidden.getvalue() == ""


def test_repeat_bench_pushes_nothing(sshd, client_key, ssh_opts, bundles, device_python):
    server = sshd()
    trust(server, ssh_opts)
    device = server.device(client_key, "d1", python=device_python)
    first = farm_bench([device], bundles["big"], store=None, ssh=ssh_opts, options=QUICK).outcomes[0]
    again = farm_bench([device], bundles["big"], store=None, ssh=ssh_opts, options=QUICK).outcomes[0]
    assert first.pushed_bytes > bundles["big"].model_path.stat().st_size
    assert again.ok and again.pushed_bytes == 0
    assert first.to_dict()["push_resumes"] == 0  # a clean link needed no reconnect (a flaky one would show here)
    assert sorted(p.name for p in (server.home / ".edgec" / "agent").iterdir()) == [
        Path(p).name for p in [__import__("edgec.deploy.remote", fromlist=["x"]).agent_zipapp()]]


def test_a_bench_after_a_push_that_reconnected_runs_on_a_new_agent_session(sshd, client_key, ssh_opts, bundles,
                                                                             device_python):
    from edgec.deploy.remote import SshAgent

    server = sshd()
    trust(server, ssh_opts)
    with SshAgent(server.device(client_key, "d1", python=device_python), ssh_opts, timeout=120) as agent:
        agent.info()  # the agent's serve process starts on the first link
        first = agent.session()
        agent.conn.reconnect()  # what a push does to resume a stalled upload (seen over a 20% lossy link)
        result = agent.bench(agent.place(bundles["small"]), QUICK)
        assert agent.session() is not first and first.client is not agent.conn.client
    assert result["latency_ms"]["count"] == QUICK.runs


def test_a_link_that_breaks_after_the_bench_does_not_turn_the_result_into_an_error(sshd, client_key, ssh_opts,
                                                                                   bundles, device_python):
    """Closing the agent session is clean-up: a socket that fails then (seen in CI: EOFError from paramiko's
    channel close in ``SshAgent.__exit__``) must not replace the finished benchmark with a traceback."""
    from edgec.deploy.remote import SshAgent

    def broken(*_):
        raise EOFError()

    server = sshd()
    trust(server, ssh_opts)
    with SshAgent(server.device(client_key, "d1", python=device_python), ssh_opts, timeout=120) as agent:
        result = agent.bench(agent.place(bundles["small"]), QUICK)
        agent.conn.client.get_transport().packetizer.write_all = broken  # every later send fails, as on EPIPE
    assert result["latency_ms"]["count"] == QUICK.runs


def test_bench_over_a_lossy_slow_link_completes(netns_farm, client_key, ssh_opts, bundles, device_python):
    lossy, slow = netns_farm.add(1), netns_farm.add(2)
    for server in (lossy, slow):
        trust(server, ssh_opts)
    netns_farm.packet_loss(lossy, 20)
    netns_farm.rate_limit(slow, "4mbit")
    opts = replace(ssh_opts, connect_timeout=15, stall_timeout=15, retries=3)
    devices = [lossy.device(client_key, "lossy", python=device_python),
               slow.device(client_key, "slow", python=device_python)]
    run = farm_bench(devices, bundles["big"], store=None, ssh=opts, options=QUICK, device_timeout=120)
    assert [o.error for o in run.outcomes] == [None, None]
    assert netns_farm.dropped_packets(lossy) > 10


def agent_processes(server) -> list[int]:
    """PIDs of agent ``serve`` processes started from this device's home (the devices share this host)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if entry.name.isdigit() and b"serve" in argv and any(str(server.home).encode() in a for a in argv):
            found.append(int(entry.name))
    return found


def test_the_agent_on_the_device_stops_when_the_farm_gives_up_on_it(sshd, client_key, ssh_opts, bundles,
                                                                     device_python, tmp_path):
    """A deadline (like Ctrl-C) closes the connection mid-benchmark: the agent must not run on to its end."""
    server = sshd()
    trust(server, ssh_opts)
    device = server.device(client_key, "d1", python=device_python)
    seen_running = []

    class Watch(FarmProgress):
        def stage(self, name, stage, detail=""):
            super().stage(name, stage, detail)
            if stage == "benchmarking":
                threading.Timer(1.0, lambda: seen_running.append(agent_processes(server))).start()

    run = farm_bench([device], bundles["small"], store=ResultsStore(tmp_path / "r.db"), ssh=ssh_opts, parallel=1,
                     device_timeout=6, options=BenchOptions(duration_s=60.0, warmup=2, idle_s=0, power="none"),
                     progress=Watch([device], enabled=False))
    assert run.outcomes[0].error["type"] == "DeviceTimeoutError"
    assert seen_running and seen_running[0]  # it was benchmarking when the connection was closed
    deadline = time.monotonic() + 10
    while agent_processes(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert agent_processes(server) == []  # gone within seconds, not after the 60 s benchmark


def test_the_agent_stops_when_its_link_dies_silently(netns_farm, client_key, ssh_opts, bundles, device_python,
                                                     tmp_path, monkeypatch):
    """Link down mid-benchmark: no FIN reaches the device, so its sshd keeps the session; without the heartbeat
    the agent would benchmark on for 60 s (and skew the device's next measurement)."""
    from edgec.deploy import remote

    monkeypatch.setattr(remote, "HEARTBEAT_S", 3.0)
    server = netns_farm.add(1)
    trust(server, ssh_opts)
    device = server.device(client_key, "d1", python=device_python)
    cut = []

    def link_down():
        cut.append(agent_processes(server))
        netns_farm.link(server, up=False)

    progress = KillDuringBench([device], "d1", link_down, delay=1.0)
    run = farm_bench([device], bundles["small"], store=ResultsStore(tmp_path / "r.db"), ssh=ssh_opts, parallel=1,
                     device_timeout=8, options=BenchOptions(duration_s=60.0, warmup=2, idle_s=0, power="none"),
                     progress=progress)
    assert run.outcomes[0].error["type"] == "DeviceTimeoutError"
    assert cut and cut[0]  # the agent was benchmarking when the link went down
    deadline = time.monotonic() + 10
    while agent_processes(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert agent_processes(server) == []  # the link is still down: only the heartbeat can have ended it
