"""Sampling a power source on a thread across a phase, and turning the samples into watts and joules.

A benchmark has two phases: ``idle`` (the process sleeps) then ``active`` (the timed window). Each phase is
read once synchronously at its start and at its end, and every ``interval_s`` in between by a daemon thread, so
the samples always span the whole phase. Energy of a phase: for a power source, the trapezoid integral of the
samples; for an energy counter, the last reading minus the first. Average power = energy / phase duration.

Energy per inference = (active energy - idle power x active duration) / inferences: what the inferences cost on
top of the device sitting idle.

A source that fails mid-phase (a sensor file that vanished, a meter command that stopped answering) is marked
lost: sampling stops, the benchmark goes on, and the summary reports ``status: "lost"`` with the reason and no
figures, never a partial figure presented as a measurement.
"""

from __future__ import annotations

import threading
import time

from edgec.device_agent.power._sysfs import PowerSource

__all__ = ["MIN_SAMPLES", "Phase", "PowerMeter"]

MIN_SAMPLES = 10  # fewer samples than this in the timed window: the result says the figure is shaky


class Phase:
    """Samples of one phase: (time_s, value) pairs, the phase's edges and why it was lost, if it was."""

    def __init__(self, name: str):
        self.name = name
        self.samples: list[tuple[float, float]] = []
        self.t0 = 0.0
        self.t1 = 0.0
        self.lost: str | None = None

    @property
    def duration_s(self) -> float:
        return self.t1 - self.t0

    def energy_j(self, kind: str) -> float | None:
        if self.lost or len(self.samples) < 2:
            return None
        if kind == "energy":
            return self.samples[-1][1] - self.samples[0][1]
        total = 0.0
        for (ta, va), (tb, vb) in zip(self.samples, self.samples[1:]):
            total += (tb - ta) * (va + vb) / 2.0
        return total


class PowerMeter:
    """Reads ``source`` across named phases. Not reentrant: one phase at a time."""

    def __init__(self, source: PowerSource, interval_s: float = 0.02, clock=time.monotonic):
        self.source = source
        self.interval_s = max(interval_s, getattr(source, "min_interval_s", 0.0))
        self.clock = clock
        self.phases: dict[str, Phase] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._current: Phase | None = None

    def _sample(self, phase: Phase) -> None:
        if phase.lost:
            return
        try:
            value = self.source.read()
        except (OSError, ValueError) as exc:
            phase.lost = f"{self.source.name} stopped answering during the {phase.name} phase: {exc}"
            return
        phase.samples.append((self.clock(), value))

    def _loop(self, phase: Phase) -> None:
        while not self._stop.wait(self.interval_s) and not phase.lost:
            self._sample(phase)

    def begin(self, name: str) -> None:
        phase = self.phases[name] = Phase(name)
        self._current = phase
        if self.source.kind == "model":
            phase.t0 = self.clock()
            return
        self._sample(phase)
        phase.t0 = phase.samples[0][0] if phase.samples else self.clock()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(phase,), name=f"edgec-power-{name}", daemon=True)
        self._thread.start()

    def end(self) -> Phase:
        phase = self._current
        if phase is None:
            raise RuntimeError("PowerMeter.end() without begin()")
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._sample(phase)
        phase.t1 = phase.samples[-1][0] if (phase.samples and not phase.lost) else self.clock()
        self._current = None
        return phase

    def measure_idle(self, seconds: float) -> Phase:
        """Sample while this thread sleeps for ``seconds``."""
        self.begin("idle")
        time.sleep(seconds)
        return self.end()

    def _powers(self) -> tuple[float | None, float | None, float | None]:
        """(idle watts, active watts, active energy J) from the phases."""
        source, active, idle = self.source, self.phases.get("active"), self.phases.get("idle")
        if source.kind == "model":
            window = active.duration_s if active else 0.0
            return source.idle_watts, source.active_watts, source.active_watts * window
        idle_w = None
        if idle is not None and idle.duration_s > 0 and idle.energy_j(source.kind) is not None:
            idle_w = idle.energy_j(source.kind) / idle.duration_s
        active_j = active.energy_j(source.kind) if active is not None else None
        active_w = active_j / active.duration_s if active_j is not None and active.duration_s > 0 else None
        return idle_w, active_w, active_j

    def summary(self, inferences: int) -> dict:
        """The result's ``power`` section for a window holding ``inferences`` runs."""
        source, active = self.source, self.phases.get("active")
        lost = [p.lost for p in self.phases.values() if p.lost]
        doc = {"source": source.name, "measured": bool(source.measured), "kind": source.kind,
               "status": "lost" if lost else ("estimated" if source.kind == "model" else "ok"),
               "reason": lost[0] if lost else None, "detail": source.describe(),
               "idle_watts": None, "active_watts": None, "energy_window_j": None, "energy_per_inference_j": None,
               "idle_s": None, "window_s": None, "samples": None, "sampling_hz": None, "note": None}
        if active is None:
            return doc
        idle = self.phases.get("idle")
        doc["window_s"] = active.duration_s
        doc["idle_s"] = idle.duration_s if idle else None
        if source.kind != "model":
            doc["samples"] = len(active.samples)
            # the thread's own rate: the two synchronous reads at the window's edges do not count
            doc["sampling_hz"] = max(len(active.samples) - 2, 0) / active.duration_s if active.duration_s > 0 else None
            if len(active.samples) < MIN_SAMPLES:
                doc["note"] = (f"only {len(active.samples)} power samples in a {active.duration_s * 1000:.1f} ms "
                               f"window: time a longer window (--duration) for a trustworthy energy figure")
        if lost:
            return doc
        idle_w, active_w, active_j = self._powers()
        doc.update(idle_watts=idle_w, active_watts=active_w, energy_window_j=active_j)
        if active_j is not None and inferences > 0:
            net = active_j - (idle_w or 0.0) * active.duration_s
            doc["energy_per_inference_j"] = net / inferences
            if idle_w is None:
                doc["reason"] = "idle power not measured (--idle 0): energy per inference includes idle power"
        return doc
