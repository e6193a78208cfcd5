"""Benchmark one bundle on many devices at once, recording each outcome the moment it is known.

Guarantees:
- never hangs: each device has an overall deadline (``device_timeout``); at the deadline its connection is
  closed from here, which frees whatever paramiko call it was blocked in, and a DeviceTimeoutError is recorded;
- never loses results: a worker stores its device's result or error in the results database as soon as it has
  it, before the next device's outcome is known;
- Ctrl-C closes every open connection, waits for the workers to notice, keeps (and returns) what finished and
  records nothing for devices that were stopped half way;
- connection setup is retried (in ``ssh.connect``); a benchmark that broke off is never re-run.
"""

from __future__ import annotations

import secrets
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from edgec.bundle import Bundle
from edgec.deploy.bench import run_bench
from edgec.deploy.interrupt import ctrl_c
from edgec.deploy.inventory import Device
from edgec.deploy.prune import prune_device, store_usage
from edgec.deploy.remote import SshAgent, agent_zipapp, check_runtime
from edgec.deploy.results import ResultsStore, latency_figures
from edgec.deploy.ssh import SshOptions, connect
from edgec.device_agent.options import BenchOptions
from edgec.errors import DeviceError, DeviceTimeoutError, EdgecError

__all__ = ["DeviceOutcome", "FarmProgress", "FarmRun", "check_device", "check_devices", "farm_bench", "outcome_text"]


@dataclass
class DeviceOutcome:
    """One device's result or error (``{"type", "message"}``)."""

    device: Device
    result: dict | None = None
    error: dict | None = None
    seconds: float = 0.0
    pushed_bytes: int | None = None
    push_resumes: int | None = None
    run_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None

    @property
    def latency(self) -> dict:
        """``latency_ms_mean``/``_p50``/``_p90`` of the result (None where it has none)."""
        return latency_figures(self.result or {})

    def to_dict(self) -> dict:
        return {"device": self.device.name, "address": self.device.address, "target": self.device.target,
                "ok": self.ok, "seconds": round(self.seconds, 3), "pushed_bytes": self.pushed_bytes,
                "push_resumes": self.push_resumes, "run_id": self.run_id, "result": self.result, "error": self.error}


@dataclass
class FarmRun:
    """All outcomes of one farm bench; ``interrupted`` when Ctrl-C stopped it."""

    farm_run: str
    bundle_id: str
    outcomes: list[DeviceOutcome] = field(default_factory=list)
    interrupted: bool = False
    results_db: str | None = None  # where the outcomes were stored

    def to_dict(self) -> dict:
        return {"farm_run": self.farm_run, "bundle_id": self.bundle_id, "interrupted": self.interrupted,
                "results_db": self.results_db, "devices": [o.to_dict() for o in self.outcomes]}


class FarmProgress:
    """A live table on a terminal (one line per device, redrawn in place); silent when disabled."""

    def __init__(self, devices: list[Device], enabled: bool, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.state = {d.name: ("queued", "") for d in devices}
        self.start = {d.name: None for d in devices}
        self._drawn = 0
        self._lock = threading.Lock()

    def stage(self, name: str, stage: str, detail: str = "") -> None:
        with self._lock:
            self.state[name] = (stage, detail)
            if self.start[name] is None and stage != "queued":
                self.start[name] = time.monotonic()

    def draw(self) -> None:
        if not self.enabled:
            return
        with self._lock:
            lines = []
            width = max(len(n) for n in self.state)
            for name, (stage, detail) in self.state.items():
                begun = self.start[name]
                elapsed = f"{time.monotonic() - begun:6.1f}s" if begun and stage not in ("ok", "failed") else ""
                lines.append(f"  {name:<{width}}  {stage:<13} {detail[:70]:<70} {elapsed}")
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
        self.stream.flush()
        self._drawn = len(lines)


def _short(error: dict) -> str:
    """The error for the live display, without the ``device (address): `` prefix its own line already shows."""
    from edgec.device_agent.text import terminal_safe

    message = error["message"]
    head, sep, rest = message.partition("): ")
    return terminal_safe(f"{error['type']}: {rest if sep and '(' in head else message}")


def farm_bench(devices: list[Device], bundle: Bundle, *, store: ResultsStore | None, options: BenchOptions,
               ssh: SshOptions, parallel: int = 8, device_timeout: float = 600.0,
               progress: FarmProgress | None = None) -> FarmRun:
    """Benchmark ``bundle`` on every device, ``parallel`` at a time; see the module docstring for guarantees."""
    agent_zipapp()  # build once, before the threads need it
    runner = _FarmRunner(bundle, store, options, ssh, device_timeout, progress or FarmProgress(devices, False))
    run = runner.run(devices, parallel)
    run.results_db = str(store.path) if store is not None else None
    return run


class _FarmRunner:
    """The state one farm bench shares between its worker threads and the watching main thread."""

    def __init__(self, bundle, store, options, ssh, device_timeout, progress):
        self.bundle, self.store, self.options, self.ssh = bundle, store, options, ssh
        self.device_timeout, self.progress = device_timeout, progress
        self.farm_run = FarmRun(farm_run=secrets.token_hex(6), bundle_id=bundle.bundle_id)
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.live: dict[str, object] = {}  # device -> open connection, closable from the main thread
        self.deadlines: dict[str, float] = {}
        self.timed_out: set[str] = set()

    def run(self, devices: list[Device], parallel: int) -> FarmRun:
        run = self.farm_run
        pool = ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="edgec-farm")
        futures = [pool.submit(self.work, d) for d in devices]
        try:
            with ctrl_c() as pressed:
                pending = set(futures)
                while pending and not pressed.is_set():
                    _, pending = wait(pending, timeout=0.2)
                    self.enforce_deadlines()
                    self.progress.draw()
                if pressed.is_set():
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            run.interrupted = True
            self.cancel.set()
            for future in futures:
                future.cancel()
            with self.lock:
                for conn in list(self.live.values()):
                    conn.close()  # frees the worker, which then records nothing
        finally:
            pool.shutdown(wait=True)
            self.progress.draw()
        run.outcomes = [f.result() for f in futures if not f.cancelled() and f.result() is not None]
        return run

    def work(self, device: Device) -> DeviceOutcome | None:
        """One device from connect to stored outcome; None when Ctrl-C stopped it half way."""
        started = time.monotonic()
        with self.lock:
            self.deadlines[device.name] = started + self.device_timeout
        outcome = DeviceOutcome(device)
        try:
            if self.cancel.is_set():
                return None
            agent = SshAgent(device, self.ssh, timeout=self.device_timeout,
                             on_connect=lambda conn: self.register(device.name, conn),
                             on_stage=lambda s, d: self.progress.stage(device.name, s, d))
            with agent:
                done = run_bench(agent, self.bundle, self.options)
            outcome.result, outcome.pushed_bytes, outcome.push_resumes = done.result, done.pushed_bytes, \
                done.push_resumes
        except Exception as exc:  # whatever went wrong is this device's outcome, recorded below
            outcome.error = self.describe(device, exc)
        finally:
            with self.lock:
                self.live.pop(device.name, None)
                self.deadlines.pop(device.name, None)
        outcome.seconds = time.monotonic() - started
        if self.cancel.is_set() and outcome.error:
            return None  # stopped by Ctrl-C half way: not a device failure, not recorded
        if self.store is not None:
            outcome.run_id = self.store.record(
                bundle_id=self.bundle.bundle_id, device=device.name, address=device.address, profile=device.target,
                result=outcome.result, error=outcome.error, farm_run=self.farm_run.farm_run)
        self.progress.stage(device.name, "ok" if outcome.ok else "failed", outcome_text(outcome))
        return outcome

    def register(self, name: str, conn) -> None:
        with self.lock:
            self.live[name] = conn
            if self.cancel.is_set() or name in self.timed_out:
                conn.close()

    def describe(self, device: Device, exc: Exception) -> dict:
        error = exc if isinstance(exc, EdgecError) else DeviceError(f"{device.name}: {type(exc).__name__}: {exc}")
        if device.name in self.timed_out:
            error = DeviceTimeoutError(
                f"{device.name}: no outcome within the device timeout of {self.device_timeout:g} s; stopped "
                f"(last step: {self.progress.state[device.name][0]})")
        return {"type": type(error).__name__, "message": str(error)}

    def enforce_deadlines(self) -> None:
        now = time.monotonic()
        with self.lock:
            for name, deadline in self.deadlines.items():
                if now > deadline and name not in self.timed_out:
                    self.timed_out.add(name)
                    if name in self.live:
                        self.live[name].close()


def outcome_text(outcome: DeviceOutcome) -> str:
    """A device's outcome for the live display: its latency, or its error."""
    return _latency_text(outcome.result) if outcome.ok else _short(outcome.error)


def _latency_text(result: dict) -> str:
    figures = latency_figures(result)
    mean, p90 = figures["latency_ms_mean"], figures["latency_ms_p90"]
    if mean is None:
        return "done"
    return f"mean {mean:.3f} ms" + (f", p90 {p90:.3f} ms" if p90 is not None else "")


def check_device(device: Device, ssh: SshOptions, bundle: Bundle | None = None) -> dict:
    """One device's row for ``farm check``: reachability, Python, runtimes, free disk, bundle store use and agent
    version; an error is reported in the row, like any other outcome."""
    row = {"device": device.name, "address": device.address, "ok": False}
    started = time.monotonic()

    def connected(_conn) -> None:
        row["connect_seconds"] = round(time.monotonic() - started, 3)

    try:
        with SshAgent(device, ssh, timeout=120.0, on_connect=connected) as agent:
            info = agent.info()
            row.update(python=info.get("python"), runtimes=info.get("runtimes"),
                       free_disk_bytes=info.get("free_disk_bytes"), agent_version=info.get("agent_version"),
                       platform=info.get("platform"), store=store_usage(agent.conn))
            if bundle is not None:
                row["runtime"] = check_runtime(info, bundle, device, agent.conn.target.label)
            row["ok"] = True
    except Exception as exc:  # reported in the device's row, like any other failure
        row["error"] = {"type": type(exc).__name__, "message": str(exc)}
    return row


def check_devices(devices: list[Device], ssh: SshOptions, parallel: int = 8, bundle: Bundle | None = None) -> list[dict]:
    """``check_device`` on each device, ``parallel`` at a time, in inventory order."""
    agent_zipapp()  # build once, before the threads need it
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(lambda device: check_device(device, ssh, bundle), devices))


def prune_devices(devices: list[Device], ssh: SshOptions, keep: int, older_than_days: float | None = None,
                  dry_run: bool = False, parallel: int = 8) -> list[dict]:
    """``prune_device`` on each device in parallel: one row per device, with the report or the error."""
    current = agent_zipapp().name

    def one(device: Device) -> dict:
        try:
            with connect(device.ssh_target(), ssh) as conn:
                report = prune_device(conn, keep, older_than_days, current_agent=current, dry_run=dry_run)
            return {"device": device.name, "address": device.address, "ok": True, **report.to_dict()}
        except Exception as exc:  # reported in the device's row, like any other failure
            return {"device": device.name, "address": device.address, "ok": False,
                    "error": {"type": type(exc).__name__, "message": str(exc)}}

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(one, devices))
