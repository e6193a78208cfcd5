"""Sweeps and farms on a Ray cluster: compile and accuracy tasks on any node, device work on its site's node.

- Compile tasks ask for one CPU each (calibration and TFLite conversion are the heavy parts) and are retried up to
  3 times when their node dies; a compile that fails on bad input returns its error and is not retried.
- The source model, calibration and evaluation data travel once per content hash through the object store;
  bundles come back as tars and are written on the driver atomically, as every bundle write is.
- Each device is an actor named after it (``max_concurrency=1``) placed on a node whose resources include
  ``site:<site>`` when the inventory gives the device a site: one device never runs two benchmarks at once, even
  for two drivers, while the farm runs many devices at once. A site no alive node serves is reported at once.
- Results stream back to the driver, which stores each in its SQLite database the moment it arrives.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from edgec.cluster.transfer import Payload, pack
from edgec.cluster.work import DeviceWorker, Shipped, compile_variant, eval_outputs
from edgec.errors import ClusterError

__all__ = ["Cluster", "Tally"]

NAMESPACE = "edgec"


class Tally:
    """A tiny actor the tasks report to (start, finish, node), so the driver can show work per node."""

    def __init__(self):
        self.state: dict[str, tuple[str, str]] = {}

    def started(self, task: str, node: str) -> None:
        self.state[task] = ("running", node)

    def finished(self, task: str, node: str) -> None:
        self.state[task] = ("done", node)

    def snapshot(self) -> dict:
        return dict(self.state)


class Cluster:
    """A connected Ray session and the remote wrappers edgec submits through it."""

    def __init__(self, ray, progress: bool | None = None):
        self.ray = ray
        self._refs: dict[str, object] = {}
        self.tally = ray.remote(num_cpus=0)(Tally).remote()
        self._compile = ray.remote(compile_variant).options(num_cpus=1, num_returns=2, max_retries=3,
                                                              retry_exceptions=False)
        self._eval = ray.remote(eval_outputs).options(num_cpus=1, max_retries=3, retry_exceptions=False)
        self._device = ray.remote(DeviceWorker)
        self.board = ClusterBoard(self, sys.stderr.isatty() if progress is None else progress)

    # -- files -----------------------------------------------------------------------------------------------
    def put(self, payload: Payload):
        """The object ref of a payload, put once per content hash."""
        if payload.sha256 not in self._refs:
            self._refs[payload.sha256] = self.ray.put(payload)
        return self._refs[payload.sha256]

    def ship(self, value, refs: dict):
        """An option value as the node sees it: existing paths (and ``file.py:function``) travel by hash."""
        if not isinstance(value, (str, Path)):
            return value
        text, suffix = str(value), ""
        if not Path(text).exists() and ":" in text:
            head, _, func = text.rpartition(":")
            if head.endswith(".py") and Path(head).is_file():
                text, suffix = head, f":{func}"
        if not Path(text).exists():
            return value  # a module:function spec or a plain value: the node resolves it itself
        payload = pack(text)
        refs[payload.sha256] = self.put(payload)
        return Shipped(payload.sha256, suffix)

    # -- compile and accuracy ---------------------------------------------------------------------------------
    def compile_variants(self, source: str, jobs: dict[str, dict], profile) -> dict[str, tuple[dict, object]]:
        """label -> (meta, payload ref) for every job (its compile options); submitted at once, gathered as they
        finish. ``meta['error']`` is set for a compile that failed on its input."""
        refs: dict = {}
        shipped_source = self.ship(source, refs)
        submitted = {}
        for label, options in jobs.items():
            shipped = {key: self.ship(value, refs) if key in ("calibration", "eval_data") else value
                       for key, value in options.items()}
            submitted[label] = self._compile.remote(label, shipped_source, shipped, profile, refs, self.tally)
        metas = self.gather({label: pair[0] for label, pair in submitted.items()}, what="compile")
        return {label: (metas[label], submitted[label][1]) for label in submitted}

    def fetch_bundle(self, ref, out: Path):
        """The bundle a compile task returned, written to ``out`` on this machine atomically (replacing it)."""
        from edgec.bundle import Bundle, write_atomically
        from edgec.cluster.transfer import unpack_into

        payload = self.ray.get(ref)
        return Bundle(write_atomically(out, lambda tmp: unpack_into(payload.data, tmp), force=True))

    def eval_outputs(self, payload_refs: dict[str, object], data: str) -> dict[str, dict]:
        refs: dict = {}
        shipped = self.ship(data, refs)
        data_ref = refs[shipped.key]
        return self.gather({label: self._eval.remote(label, ref, data_ref, self.tally)
                            for label, ref in payload_refs.items()}, what="accuracy")

    def gather(self, pending: dict[str, object], what: str) -> dict[str, object]:
        """Wait for every ref, redrawing the board; a task whose retries ran out is a ClusterError."""
        ray, done, waiting = self.ray, {}, dict(pending)
        by_ref = {ref: label for label, ref in waiting.items()}
        while by_ref:
            ready, _ = ray.wait(list(by_ref), num_returns=1, timeout=0.5)
            self.board.draw(len(pending), what)
            for ref in ready:
                label = by_ref.pop(ref)
                try:
                    done[label] = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    raise ClusterError(f"{what} of {label}: the cluster lost the task after its retries "
                                       f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
        self.board.finish()
        return done

    # -- devices ------------------------------------------------------------------------------------------------
    def served_sites(self) -> set[str]:
        sites = set()
        for node in self.ray.nodes():
            if node.get("Alive"):
                sites |= {key[len("site:"):] for key in node.get("Resources", {}) if key.startswith("site:")}
        return sites

    def device_actor(self, device):
        site = getattr(device, "site", None)
        options = dict(name=f"device:{device.name}", namespace=NAMESPACE, get_if_exists=True, num_cpus=0,
                       max_concurrency=1, max_restarts=0, lifetime="detached")
        if site:
            options["resources"] = {f"site:{site}": 0.001}
        return self._device.options(**options).remote(device)

    def kill(self, actor) -> None:
        try:
            self.ray.kill(actor)
        except Exception:
            pass


class ClusterBoard:
    """One status line on a terminal: tasks queued / running / done per node; silent when not a terminal."""

    def __init__(self, cluster: Cluster, enabled: bool):
        self.cluster, self.enabled = cluster, enabled
        self._last, self._lock, self._width = 0.0, threading.Lock(), 0

    def draw(self, total: int, what: str) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.5:
            return
        self._last = now
        state = self.cluster.ray.get(self.cluster.tally.snapshot.remote())
        mine = [value for task, value in state.items() if task.startswith(f"{what}:")]
        per_node: dict[str, list[int]] = {}
        for status, node in mine:
            per_node.setdefault(node[:8], [0, 0])[status == "done"] += 1
        started = len(mine)
        nodes = ", ".join(f"{n}: {r} running {d} done" for n, (r, d) in sorted(per_node.items()))
        line = f"  cluster {what}: {max(total - started, 0)} queued; {nodes}"
        with self._lock:
            sys.stderr.write("\r" + line.ljust(self._width))
            sys.stderr.flush()
            self._width = len(line)

    def finish(self) -> None:
        if self.enabled and self._width:
            sys.stderr.write("\n")
            self._width = 0
