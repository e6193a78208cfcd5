"""The live model of the inference service, and its hot swap when the store's ``active`` bundle changes.

A watcher thread reads the ``active`` symlink every ``poll_s`` seconds. When it names a bundle other than the
one served, the watcher loads it beside the old one, checks every file's sha256 and runs the reference inputs
(``bench.load_model``: the same self-check as a benchmark), then switches the served slot under a lock. Requests
hold the slot they started with until they finish, so none fails during a swap; the old slot is dropped once
its last request is done (drained). A bundle that fails its check is never served: the old one keeps serving,
the failure shows in ``/healthz`` and ``/metrics``, and it is not retried until ``active`` changes again.
"""

from __future__ import annotations

import os
import threading
import time

from edgec.device_agent import conditions, memory, store
from edgec.device_agent.bench import _ordered, load_model
from edgec.device_agent.metrics import ServiceMetrics
from edgec.device_agent.zipapp import agent_version

__all__ = ["InferenceService", "ModelSlot"]

DRAIN_S = 60.0


class ModelSlot:
    """One loaded, checked bundle and the requests running on it."""

    def __init__(self, model):
        self.model = model
        self.bundle_id = model.bundle.bundle_id
        self.inputs, self.outputs = model.bundle.inputs, model.bundle.outputs
        session = model.session
        self._input_names = list(getattr(session, "input_names", [m["name"] for m in self.inputs]))
        self._output_names = list(getattr(session, "output_names", [m["name"] for m in self.outputs]))
        # onnxruntime sessions may run from many threads at once; a LiteRT interpreter may not.
        self._lock = None if model.runtime_name == "onnxruntime" else threading.Lock()
        self.in_flight = 0
        self.retired = False
        self.drained = threading.Event()

    def run(self, arrays: list) -> tuple[list, float]:
        """Outputs in manifest order for inputs in manifest order, and the runtime call's seconds."""
        feeds = _ordered(arrays, [m["name"] for m in self.inputs], self._input_names)
        start = time.perf_counter()
        if self._lock is None:
            produced = self.model.session.run(feeds)
        else:
            with self._lock:
                produced = self.model.session.run(feeds)
        seconds = time.perf_counter() - start
        return _ordered(list(produced), self._output_names, [m["name"] for m in self.outputs]), seconds


class _PowerSampler:
    """Integrates a measured power source once a second; nothing at all when the device has none."""

    def __init__(self, spec: str, sysfs_root: str, stop: threading.Event):
        from edgec.device_agent.power import select_source

        source, reasons = select_source(spec, sysfs_root)
        if source is not None and not source.measured:
            source, reasons = None, [f"{source.name}: an estimate, not a sensor"]
        # auto lists every sysfs path it looked at: too long for a label; the agent's `info` shows them
        self.source, self.reason = source, "no sensor found" if spec == "auto" else "; ".join(reasons)[:120]
        self.watts: float | None = None
        self.joules = 0.0
        if source is not None:
            threading.Thread(target=self._loop, args=(stop,), name="edgec-power", daemon=True).start()

    def _loop(self, stop: threading.Event) -> None:
        last_t, last_v = time.monotonic(), None
        while not stop.wait(1.0):
            try:
                value = float(self.source.read())
            except (OSError, ValueError):
                continue
            now = time.monotonic()
            dt = now - last_t
            if self.source.kind == "energy":  # a cumulative counter: power is its slope (wraps are skipped)
                if last_v is not None and value >= last_v and dt > 0:
                    self.watts = (value - last_v) / dt
                    self.joules += value - last_v
                last_v = value
            else:
                self.watts = value
                self.joules += value * dt
            last_t = now

    def doc(self) -> dict:
        if self.source is None:
            return {"source": "none", "reason": self.reason or "no power sensor found"}
        return {"source": self.source.name, "watts": self.watts, "joules": self.joules}


class InferenceService:
    """Serves ``EDGEC_DIR/active``; see the module docstring."""

    def __init__(self, edgec_dir, threads: int | None = None, sysfs_root: str = "/sys", power: str = "auto",
                 poll_s: float = 0.2):
        self.edgec_dir, self.threads, self.sysfs_root, self.poll_s = str(edgec_dir), threads, sysfs_root, poll_s
        self.metrics = ServiceMetrics()
        self.slot: ModelSlot | None = None
        self.swap_error: dict | None = None
        self._failed: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.power = _PowerSampler(power, sysfs_root, self._stop)

    def start(self) -> None:
        """Load what ``active`` names now (a failure is reported by /healthz), then watch it."""
        self.check_active()
        threading.Thread(target=self._watch, name="edgec-swap-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.check_active()

    def check_active(self) -> None:
        target = store.active_id(self.edgec_dir)
        serving = self.slot.bundle_id if self.slot else None
        if target == serving:
            self._failed = None  # rolled back: the refused bundle may be tried again when activated again
        elif target and target != self._failed:
            self.swap_to(target)

    def swap_to(self, bundle_id: str) -> bool:
        """Load and self-check ``bundle_id``, switch to it, drain the old slot. False when it failed its check."""
        start = time.perf_counter()
        try:
            new = ModelSlot(load_model(store.bundle_dir(self.edgec_dir, bundle_id), self.threads, spinning=False))
        except Exception as exc:  # anything a bundle can do wrong must leave the old one serving
            from edgec.device_agent.cli import error_doc

            self._failed = bundle_id
            self.swap_error = {"bundle_id": bundle_id, "at": time.time(), **error_doc(exc)}
            self.metrics.swap_failed()
            return False
        with self._lock:
            old, self.slot = self.slot, new
            self._failed, self.swap_error = None, None
            self.metrics.switched(bundle_id, time.perf_counter() - start if old else None)
            if old is not None:
                old.retired = True
                if old.in_flight == 0:
                    old.drained.set()
        if old is not None:
            old.drained.wait(DRAIN_S)
        return True

    def acquire(self) -> ModelSlot | None:
        with self._lock:
            slot = self.slot
            if slot is not None:
                slot.in_flight += 1
            return slot

    def release(self, slot: ModelSlot) -> None:
        with self._lock:
            slot.in_flight -= 1
            if slot.retired and slot.in_flight == 0:
                slot.drained.set()

    def health(self) -> dict:
        slot = self.slot
        check = slot.model.reference if slot else None
        return {"status": "ok" if slot else "unavailable", "serving": slot.bundle_id if slot else None,
                "active": store.active_id(self.edgec_dir), "reference": check,
                "reference_ok": bool(check) and all(r["ok"] for r in check),
                "swap_error": self.swap_error, "uptime_s": time.time() - self.metrics.started,
                "started_at": self.metrics.started, "pid": os.getpid(), "agent_version": agent_version()}

    def render_metrics(self) -> str:
        snap = conditions.snapshot(self.sysfs_root)
        device = {"rss_bytes": memory.rss_bytes(), "temperatures_c": snap.get("temperatures_c"),
                  "throttled": snap.get("throttled"), "power": self.power.doc()}
        slot = self.slot
        return self.metrics.render(slot.bundle_id if slot else None, store.active_id(self.edgec_dir), device)
