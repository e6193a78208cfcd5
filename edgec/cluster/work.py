"""What runs on a cluster node: compiling a variant, running a bundle on evaluation data, benchmarking a device.

These are plain functions and a plain class; ``edgec.cluster.executor`` wraps them with ``ray.remote`` when a
cluster is in use, so importing this module never imports Ray. Bad input (an ``EdgecError``) comes back as a
value, never as an exception: Ray retries a task whose node died, and must not retry one that failed on its input.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edgec.errors import EdgecError

__all__ = ["DeviceWorker", "Shipped", "compile_variant", "eval_outputs", "node_id"]


@dataclass(frozen=True)
class Shipped:
    """An option value that names a file the driver shipped: its payload key, plus a ``:function`` suffix."""

    key: str
    suffix: str = ""


def node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _local(value, refs: dict):
    """The option value on this node: shipped files become paths in the node's cache."""
    import ray

    if isinstance(value, Shipped):
        return str(ray.get(refs[value.key]).materialize()) + value.suffix
    return value


def _error(exc: EdgecError) -> dict:
    return {"type": type(exc).__name__, "message": str(exc), "exit_code": exc.exit_code}


def compile_variant(label: str, source, options: dict, profile, refs: dict, tally=None):
    """Compile one variant here; returns (meta, bundle payload or None). ``meta`` has node, seconds, error."""
    from edgec import api
    from edgec.cluster.transfer import pack

    node, started = node_id(), time.monotonic()
    if tally is not None:
        tally.started.remote(f"compile:{label}", node)
    meta, payload = {"label": label, "node": node, "error": None}, None
    try:
        local = {key: _local(value, refs) for key, value in options.items()}
        with tempfile.TemporaryDirectory(prefix="edgec-cluster-compile-") as tmp:
            out = Path(tmp) / "bundle"
            api.compile(_local(source, refs), out, profile=profile, force=True, **local)
            payload = pack(out)
    except EdgecError as exc:
        meta["error"] = _error(exc)
    finally:
        meta["seconds"] = time.monotonic() - started
        if tally is not None:
            tally.finished.remote(f"compile:{label}", node)
    return meta, payload


def eval_outputs(label: str, bundle_payload, data_payload, tally=None) -> dict:
    """Outputs of one compiled variant on the evaluation data (scored on the driver against the baseline).
    Ray resolves the two payload refs, passed as top-level arguments, before the call."""
    from edgec.bundle import Bundle
    from edgec.report.evaluate import load_eval, run_bundle

    node = node_id()
    if tally is not None:
        tally.started.remote(f"accuracy:{label}", node)
    try:
        bundle = Bundle(bundle_payload.materialize())
        data = data_payload.materialize()
        arrays, labels = load_eval(data, [e["name"] for e in bundle.inputs])
        return {"outputs": run_bundle(bundle, arrays, data.name), "labels": labels, "node": node, "error": None}
    except EdgecError as exc:
        return {"outputs": None, "labels": None, "node": node, "error": _error(exc)}
    finally:
        if tally is not None:
            tally.finished.remote(f"accuracy:{label}", node)


class DeviceWorker:
    """One device's benchmarks, one at a time: a detached Ray actor with ``max_concurrency=1`` on a node of the
    device's site, named after the device, so every driver of the cluster queues on the same actor. It exits by
    itself after ``idle_s`` without work (a detached actor would otherwise live as long as the cluster)."""

    def __init__(self, device, idle_s: float = 120.0):
        import threading

        self.device, self.idle_s = device, idle_s
        self.busy, self.last = False, time.monotonic()
        threading.Thread(target=self._exit_when_idle, daemon=True).start()

    def _exit_when_idle(self) -> None:
        import os

        while True:
            time.sleep(1.0)
            if not self.busy and time.monotonic() - self.last > self.idle_s:
                os._exit(0)

    def _run(self, work):
        self.busy = True
        try:
            return work()
        finally:
            self.busy, self.last = False, time.monotonic()

    def bench(self, bundle_payload, options, ssh, timeout: float) -> dict:
        return self._run(lambda: self._bench(bundle_payload, options, ssh, timeout))

    def check(self, ssh, bundle_payload=None) -> dict:
        return self._run(lambda: self._check(ssh, bundle_payload))

    def _bench(self, bundle_payload, options, ssh, timeout: float) -> dict:
        from edgec.bundle import Bundle
        from edgec.deploy.bench import run_bench
        from edgec.deploy.remote import SshAgent

        node, started = node_id(), time.time()
        out = {"node": node, "started": started, "result": None, "error": None}
        try:
            bundle = Bundle(bundle_payload.materialize())
            with SshAgent(self.device, ssh, timeout) as agent:
                done = run_bench(agent, bundle, options)
            out.update(result=done.result, pushed_bytes=done.pushed_bytes, push_resumes=done.push_resumes)
        except Exception as exc:  # every failure is this device's outcome, reported to the driver
            out["error"] = {"type": type(exc).__name__, "message": str(exc)}
        out["finished"] = time.time()
        return out

    def calibrate(self, ssh, **options) -> dict:
        return self._run(lambda: self._calibrate(ssh, **options))

    def _calibrate(self, ssh, **options) -> dict:
        """The device's overlay document, measured from this node (the driver writes it)."""
        from edgec.deploy.remote import SshAgent
        from edgec.targets.calibrate import measure_overlay

        try:
            with SshAgent(self.device, ssh, timeout=3600.0) as agent:
                return {"overlay": measure_overlay(agent, **options), "node": node_id(), "error": None}
        except EdgecError as exc:
            return {"overlay": None, "node": node_id(), "error": _error(exc)}

    def deploy(self, bundle_payload, ssh, opts) -> dict:
        return self._run(lambda: self._deploy(bundle_payload, ssh, opts))

    def _deploy(self, bundle_payload, ssh, opts) -> dict:
        """``edgec deploy`` on this device from this node; the rollout records travel back to the driver's store."""
        from edgec.bundle import Bundle
        from edgec.deploy.rollout import deploy_device

        records: list[tuple] = []
        out = deploy_device(self.device, Bundle(bundle_payload.materialize()), ssh, opts,
                            lambda *record: records.append(record))
        return {"rollout": out, "records": records, "node": node_id()}

    def _check(self, ssh, bundle_payload=None) -> dict:
        from edgec.bundle import Bundle
        from edgec.deploy.farm import check_device

        bundle = Bundle(bundle_payload.materialize()) if bundle_payload is not None else None
        return {**check_device(self.device, ssh, bundle), "node_id": node_id()}
