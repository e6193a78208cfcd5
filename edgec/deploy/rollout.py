"""``edgec deploy`` and ``edgec rollback``: make a bundle the live model of devices, prove it, or take it back.

One device: connect, install the agent, check the runtime, push (verified on the device), ``activate`` (hashes
checked, then the ``active`` symlink renamed into place), make sure the service runs (started with a pidfile, or
a systemd unit with ``service="systemd"``), then ``wait-healthy``: the service must serve the new bundle and
reproduce its reference outputs through HTTP within ``health_timeout``. Otherwise the previous bundle is
activated again (or the pointer removed when there was none) and the device's outcome says why.

Many devices: each device is deployed independently, ``parallel`` at a time. With ``canary=K`` the first K
devices go first; the rest start only when every canary is healthy and its live p99 (the service's window,
with ``probe_count`` reference requests per check so there is traffic to measure) stays within the bundle's
benchmark p99 in the results database plus ``margin_pct`` for ``canary_time`` seconds. A canary that leaves
the band stops the rollout: every canary is rolled back and the other devices are never touched.
"""

from __future__ import annotations

import posixpath
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from edgec.bundle import Bundle
from edgec.deploy.inventory import Device
from edgec.deploy.live import device_status, sample_from_status
from edgec.deploy.push import install_agent, push_bundle, remote_home
from edgec.deploy.remote import agent_call, agent_zipapp, check_runtime
from edgec.deploy.ssh import Connection, SshOptions, connect
from edgec.errors import EdgecError, UsageError

__all__ = ["DeviceRollout", "Rollout", "ServeOptions", "deploy", "rollback_device", "rollout_recorder"]


@dataclass(frozen=True)
class ServeOptions:
    """How the service runs on the devices and how long a device has to prove a new bundle."""

    port: int = 8750
    host: str = "127.0.0.1"
    token_file: str | None = None  # a path on the device; required with a non-loopback host
    threads: int | None = None
    service: str = "pidfile"  # or "systemd"
    health_timeout: float = 60.0

    def __post_init__(self):
        if self.service not in ("pidfile", "systemd"):
            raise UsageError(f"--service {self.service!r}: choose pidfile or systemd")
        if not 0 <= self.port < 65536:  # 0: any free port (serve.json on the device says which)
            raise UsageError(f"--port {self.port}: expected 0-65535")
        if self.health_timeout <= 0:
            raise UsageError(f"--health-timeout {self.health_timeout}: must be > 0")
        from edgec.device_agent.httpd import is_loopback

        if not is_loopback(self.host) and not self.token_file:
            raise UsageError(f"--host {self.host}: a service reachable from the network needs --token-file (a file "
                             "on the device holding at least 16 characters; clients send Authorization: Bearer)")

    def run_args(self) -> list[str]:
        args = ["--host", self.host, "--port", str(self.port)]
        if self.token_file:
            args += ["--token-file", self.token_file]
        if self.threads:
            args += ["--threads", str(self.threads)]
        return args


@dataclass
class DeviceRollout:
    """One device's outcome: ``status`` ok, failed (nothing changed or could not connect), rolled_back."""

    device: str
    bundle_id: str
    status: str = "failed"
    previous: str | None = None
    reason: str = ""
    stage: str = ""
    seconds: float = 0.0
    canary: bool = False
    samples: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Rollout:
    rollout: str
    bundle_id: str
    devices: list[DeviceRollout] = field(default_factory=list)
    stopped: str = ""  # why a canary stopped the rollout
    untouched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.stopped and all(d.ok for d in self.devices)

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


class _Device:
    """An open connection to one device with the agent installed: the calls a rollout makes there."""

    def __init__(self, conn: Connection, device: Device):
        self.conn, self.device = conn, device
        self.agent = install_agent(conn, agent_zipapp())
        self.edgec_dir = posixpath.join(remote_home(conn), ".edgec")

    def call(self, command: str, *args: str, timeout: float = 120.0) -> dict:
        argv = [self.device.python, self.agent, command, "--edgec-dir", self.edgec_dir, *args]
        return agent_call(self.conn, self.device, argv, timeout=timeout, what=f"agent {command}")

    def ensure_service(self, opts: ServeOptions) -> None:
        status = self.call("status")
        if status.get("running"):
            health = status.get("healthz")
            # A service that does not answer is left alone: killing a hung process is not a deploy's call;
            # the health check below fails and the bundle is rolled back.
            if not health or health.get("agent_version") == posixpath.basename(self.agent)[12:28]:
                return
            self.call("stop")  # another agent version: a clean restart (drain, exit, start again)
        if opts.service == "systemd":
            from edgec.deploy.systemd import install_unit

            install_unit(self.conn, [self.device.python, self.agent, "run", "--edgec-dir", self.edgec_dir,
                                     *opts.run_args()])
        else:
            self.call("start", *opts.run_args(), "--timeout", f"{opts.health_timeout:g}",
                      timeout=opts.health_timeout + 60)

    def wait_healthy(self, bundle_id: str, timeout: float) -> dict:
        return self.call("wait-healthy", bundle_id, "--timeout", f"{timeout:g}", timeout=timeout + 60)

    def rollback(self, previous: str | None) -> dict:
        return self.call("rollback", *(["--to", previous] if previous else ["--none"]))


def deploy_device(device: Device, bundle: Bundle, ssh: SshOptions, opts: ServeOptions, record,
                  progress=None) -> DeviceRollout:
    """One device: connect, check the runtime, push, activate, start the service, health-check; roll back on
    failure. ``record(device, action, bundle_id, previous, status, reason)`` is called with the outcome."""
    out = DeviceRollout(device.name, bundle.bundle_id)
    start = time.monotonic()
    activated = False

    def stage(name: str) -> None:
        out.stage = name
        if progress is not None:
            progress(device.name, name)

    try:
        stage("connect")
        with connect(device.ssh_target(), ssh) as conn:
            dev = _Device(conn, device)
            stage("runtime")
            info = agent_call(conn, device, [device.python, dev.agent, "info"], timeout=120, what="agent info")
            check_runtime(info, bundle, device, conn.target.label)
            stage("push")
            push_bundle(conn, bundle)
            stage("activate")
            out.previous = dev.call("activate", bundle.bundle_id)["previous"]
            activated = True
            stage("service")
            dev.ensure_service(opts)
            stage("health")
            health = dev.wait_healthy(bundle.bundle_id, opts.health_timeout)
            if health.get("healthy"):
                out.status = "ok"
            else:
                out.reason = health.get("reason", "not healthy")
                _roll_back(dev, out, min(15.0, opts.health_timeout))
    except EdgecError as exc:
        out.reason = out.reason or f"{out.stage}: {' '.join(str(exc).split())}"
        if activated and out.status != "rolled_back":
            _roll_back_fresh(device, ssh, out, min(15.0, opts.health_timeout))
    finally:
        out.seconds = time.monotonic() - start
    record(device.name, "deploy", bundle.bundle_id, out.previous, out.status, out.reason)
    return out


def _roll_back(dev: _Device, out: DeviceRollout, confirm_s: float) -> None:
    """Point ``active`` back at the previous bundle; the service keeps (or goes back to) serving it."""
    try:
        dev.rollback(out.previous)
        out.status = "rolled_back"
        if out.previous:
            back = dev.wait_healthy(out.previous, confirm_s)
            if not back.get("healthy"):
                out.reason += f"; after the rollback the service is not healthy either ({back.get('reason')})"
    except EdgecError as exc:
        out.reason += f"; the rollback failed too: {' '.join(str(exc).split())}"


def _roll_back_fresh(device: Device, ssh: SshOptions, out: DeviceRollout, confirm_s: float = 15.0) -> None:
    """Roll back over a new connection (a step after activation broke the old one, or a canary stopped)."""
    try:
        with connect(device.ssh_target(), ssh) as conn:
            _roll_back(_Device(conn, device), out, confirm_s)
    except EdgecError as exc:
        out.reason += f"; could not reconnect to roll back: {' '.join(str(exc).split())}"


def rollback_device(device: Device, ssh: SshOptions, to: str | None = None, health_timeout: float = 30.0,
                    record=None) -> DeviceRollout:
    """``edgec rollback``: activate ``to`` or the previous bundle, and wait until the service serves it."""
    with connect(device.ssh_target(), ssh) as conn:
        dev = _Device(conn, device)
        done = dev.call("rollback", *(["--to", to] if to else []))
        out = DeviceRollout(device.name, done["active"], previous=done["previous"], stage="health")
        running = dev.call("status").get("running")
        health = dev.wait_healthy(done["active"], health_timeout) if running else {"healthy": True}
        out.status = "ok" if health.get("healthy") else "failed"
        out.reason = "" if running else "the service is not running (the next deploy starts it)"
        out.reason = out.reason or health.get("reason", "")
    if record:
        record(device.name, "rollback", out.bundle_id, out.previous, out.status, out.reason)
    return out


def rollout_recorder(store, rollout: str | None = None):
    """``record(device, action, bundle_id, previous, status, reason)`` into ``store`` (nothing when None)."""

    def record(device, action, bundle_id, previous, status, reason):
        if store is not None:
            store.record_rollout(device=device, action=action, bundle_id=bundle_id, previous=previous,
                                 status=status, reason=reason or None, rollout=rollout)
    return record


def _each(devices: list[Device], work, parallel: int) -> list:
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(devices)))) as pool:
        return list(pool.map(work, devices))


def _baselines(store, bundle: Bundle, devices: list[Device]) -> dict:
    found = {d.name: store.baseline(bundle.bundle_id, d.name) if store is not None else None for d in devices}
    missing = [name for name, base in found.items() if not (base or {}).get("p99_ms")]
    if missing:
        raise UsageError(f"--canary: bundle {bundle.bundle_id[:16]} has no benchmark in the results database to "
                         f"compare live latency with (devices {', '.join(missing)}); run `edgec farm bench "
                         f"{bundle.path}` first, or deploy without --canary")
    return found


def _watch_canaries(devices: list[Device], bundle: Bundle, ssh: SshOptions, baselines: dict, store,
                    canary_time: float, margin_pct: float, probe_count: int, outcomes: dict) -> str:
    """Sample every canary about once a second for ``canary_time`` s; the reason to stop, or '' when all held."""
    import contextlib

    with contextlib.ExitStack() as stack:
        devs = [_Device(stack.enter_context(connect(d.ssh_target(), ssh)), d) for d in devices]
        end = time.monotonic() + canary_time
        while True:
            round_start = time.monotonic()

            def sample(dev: _Device) -> dict:
                status = device_status(dev.conn, dev.device, dev.agent, dev.edgec_dir, bundle.bundle_id, probe_count)
                return sample_from_status(dev.device.name, status, lambda _b, n=dev.device.name: baselines[n],
                                          margin_pct)

            for dev, got in zip(devs, _each(devs, sample, len(devs))):
                outcomes[dev.device.name].samples.append({k: got.get(k) for k in ("at", "p50_ms", "p99_ms",
                                                          "baseline_p99_ms", "requests", "errors", "drift")})
                if store is not None:
                    store.record_live(got)
                if got["drift"]:
                    base = baselines[dev.device.name]["p99_ms"]
                    return (f"canary {dev.device.name}: {', '.join(got['drift'])} out of band (live p99 "
                            f"{_ms(got.get('p99_ms'))} vs benchmark p99 {_ms(base)} + {margin_pct:g}%, "
                            f"{got.get('errors')} errors in {got.get('requests')} requests)")
            if time.monotonic() >= end:
                return ""
            time.sleep(max(0.0, 1.0 - (time.monotonic() - round_start)))


def _ms(value) -> str:
    return f"{value:.3g} ms" if isinstance(value, (int, float)) else "n/a"


def _stop_canaries(canaries: list[DeviceRollout], devices: dict, ssh: SshOptions, reason: str, record) -> None:
    for out in canaries:
        if out.status != "ok":
            continue
        out.reason = reason
        _roll_back_fresh(devices[out.device], ssh, out)
        record(out.device, "rollback", out.previous, out.bundle_id, "ok" if out.status == "rolled_back" else "failed",
               reason)


def deploy(devices: list[Device], bundle: Bundle, ssh: SshOptions, opts: ServeOptions, *, store=None,
           canary: int = 0, canary_time: float = 60.0, margin_pct: float = 50.0, probe_count: int = 20,
           parallel: int = 8, progress=None) -> Rollout:
    """Deploy ``bundle`` to ``devices`` (see the module docstring); every outcome is recorded in ``store``.
    ``progress(device, stage)`` is called as each device reaches connect, runtime, push, activate, service,
    health."""
    if not devices:
        raise UsageError("no devices selected: give --device NAME or a --tag that matches the inventory")
    if canary < 0 or canary > len(devices):
        raise UsageError(f"--canary {canary}: must be between 1 and the {len(devices)} devices selected")
    agent_zipapp()
    run = Rollout(secrets.token_hex(6), bundle.bundle_id)
    record = rollout_recorder(store, run.rollout)
    first, rest = devices[:canary], devices[canary:]
    baselines = _baselines(store, bundle, first) if first else {}

    def one(device: Device) -> DeviceRollout:
        return deploy_device(device, bundle, ssh, opts, record, progress)

    if first:
        canaries = _each(first, one, parallel)
        for out in canaries:
            out.canary = True
        run.devices += canaries
        failed = [o for o in canaries if not o.ok]
        if failed:
            run.stopped = f"canary {failed[0].device} failed: {failed[0].reason}"
        else:
            outcomes = {o.device: o for o in canaries}
            run.stopped = _watch_canaries(first, bundle, ssh, baselines, store, canary_time, margin_pct,
                                          probe_count, outcomes)
        if run.stopped:
            _stop_canaries(canaries, {d.name: d for d in first}, ssh, run.stopped, record)
            run.untouched = [d.name for d in rest]
            return run
    run.devices += _each(rest, one, parallel) if rest else []
    return run
