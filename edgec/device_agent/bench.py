"""Checking and benchmarking one bundle on this machine; the document is described in ``schema.py``.

Order of a run: check every file's sha256, load the model (timed), run the reference inputs once (the first
inference, timed, and compared with the stored outputs: a bundle that fails is refused), warm up, sample idle
power, then the timed window with the power meter sampling on its thread. The garbage collector is off during
the window so its pauses do not land in the latencies.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from datetime import datetime, timezone

from edgec.bundle import Bundle, check_reference
from edgec.compare import describe
from edgec.device_agent import conditions, memory
from edgec.device_agent.isa import check_isa
from edgec.device_agent.options import BenchOptions
from edgec.device_agent.power import PowerMeter, none_summary, select_source
from edgec.device_agent.schema import SCHEMA_VERSION
from edgec.device_agent.stats import latency_samples, latency_stats
from edgec.device_agent.zipapp import agent_version
from edgec.errors import BundleError, RuntimeMissingError
from edgec.runtimes import load_runtime, runtime_for_format

__all__ = ["LoadedModel", "check_bundle", "load_model", "run_bench"]


def _progress(message: str | None) -> None:
    """Human progress on one stderr line, only when someone watches it; None clears the line."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\redgec-agent: {message}\033[K" if message else "\r\033[K")
        sys.stderr.flush()


def _ordered(values: list, names: list[str], wanted: list[str]) -> list:
    """``values`` (in ``names`` order) rearranged into ``wanted`` order when both name the same set."""
    if names == wanted or sorted(names) != sorted(wanted):
        return list(values)
    index = {n: i for i, n in enumerate(names)}
    return [values[index[n]] for n in wanted]


class LoadedModel:
    """A checked bundle with its runtime session, and what loading it cost."""

    def __init__(self, bundle_dir, threads: int | None, spinning: bool = True):
        try:
            import numpy  # noqa: F401  # part of the idle agent: the increase is the runtime's and the model's
        except ImportError:
            raise RuntimeMissingError("numpy is not installed here; install it with: python3 -m pip install numpy "
                                      "(and the runtime: onnxruntime or ai-edge-litert)") from None

        self.rss_before_load = memory.rss_bytes()
        bundle = self.bundle = Bundle(bundle_dir)
        bundle.check_files()
        self.runtime_name = runtime_for_format(bundle.format)
        self.runtime = load_runtime(self.runtime_name)
        self.runtime_version = self.runtime.version()  # raises RuntimeMissingError with the pip command
        self.threads = threads
        start = time.perf_counter()
        self.session = self.runtime.load(bundle.model_bytes(), threads=threads, spinning=spinning,
                                         name=str(bundle.path / bundle.manifest["model_file"]))
        self.load_s = time.perf_counter() - start
        self.rss_after_load = memory.rss_bytes()
        inputs, _ = bundle.reference()
        manifest_inputs = [m["name"] for m in bundle.inputs]
        session_inputs = list(getattr(self.session, "input_names", manifest_inputs))
        self.feeds = _ordered(inputs, manifest_inputs, session_inputs)
        start = time.perf_counter()
        produced = self.session.run(self.feeds)
        self.first_inference_s = time.perf_counter() - start
        session_outputs = list(getattr(self.session, "output_names", [m["name"] for m in bundle.outputs]))
        produced = _ordered(produced, session_outputs, [m["name"] for m in bundle.outputs])
        self.reference = check_reference(bundle, produced)
        self.rss_peak_after_load = memory.rss_peak_bytes()
        failed = [r for r in self.reference if not r["ok"]]
        if failed:
            bad = failed[0]
            detail = describe(bad)
            raise BundleError(f"{bundle.path}: output {bad['name']!r} does not match the bundle's reference "
                              f"on this device ({detail}); the runtime here differs or the bundle is damaged")

    def runtime_doc(self) -> dict:
        doc = {"name": self.runtime_name, "version": self.runtime_version, "package": self.runtime.package(),
               "threads": self.threads}
        if hasattr(self.session, "xnnpack"):
            doc["xnnpack"] = bool(self.session.xnnpack)
        return doc


def load_model(bundle_dir, threads: int | None = None, spinning: bool = True) -> LoadedModel:
    """Check ``bundle_dir`` (hashes, then reference outputs) and load it. Raises BundleError/RuntimeMissingError.
    ``spinning=False`` for a service: runtime threads that spin between requests take the CPU its own threads
    need."""
    return LoadedModel(bundle_dir, threads, spinning)


def check_bundle(bundle_dir, threads: int | None = None) -> dict:
    """The ``check`` command's document; ``isa`` flags instructions the bundle's quantization assumed and this
    CPU lacks (the outputs can still match the reference: it is computed here too, saturated or not)."""
    model = load_model(bundle_dir, threads)
    return {"ok": True, "bundle_id": model.bundle.bundle_id, "path": str(model.bundle.path),
            "format": model.bundle.format, "runtime": model.runtime_doc(), "outputs": model.reference,
            "isa": check_isa(model.bundle.manifest), "load_s": model.load_s,
            "first_inference_s": model.first_inference_s}


def _timed(call, runs: int, duration_s: float | None, latencies: list) -> list[int]:
    """Per-inference durations in ns appended to ``latencies``: ``runs`` runs, or as many as fit in ``duration_s``."""
    clock = time.perf_counter_ns
    record = latencies.append
    if duration_s is None:
        for _ in range(runs):
            start = clock()
            call()
            record(clock() - start)
        return latencies
    end = clock() + int(duration_s * 1e9)
    start = clock()
    while start < end:
        call()
        stop = clock()
        record(stop - start)
        start = stop
    return latencies


class _Ticker:
    """Shows how far the timed window is, twice a second, from its own thread (terminal only)."""

    def __init__(self, latencies: list, opts: BenchOptions):
        self._done = threading.Event()
        total = f"{opts.duration_s:g} s" if opts.duration_s else f"{opts.runs} runs"
        self._thread = threading.Thread(target=self._run, args=(latencies, total), daemon=True)
        self._thread.start()

    def _run(self, latencies: list, total: str) -> None:
        while not self._done.wait(0.5):
            _progress(f"timing: {len(latencies)} runs of {total}")

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _bound(session, feeds: list):
    """The session's own zero-argument call for these inputs when it has one (no per-run rebuilding)."""
    if hasattr(session, "bind"):
        return session.bind(feeds)
    run = session.run
    return lambda: run(feeds)


def _measure(model: LoadedModel, opts: BenchOptions, meter: PowerMeter | None) -> tuple[list[int], float, float]:
    """Warm-up, idle power, then the timed window: (latencies ns, warm-up s, window s)."""
    call = _bound(model.session, model.feeds)
    _progress(f"warm-up ({opts.warmup} runs)")
    start = time.perf_counter()
    for _ in range(opts.warmup):
        call()
    warmup_s = time.perf_counter() - start
    if meter is not None and opts.idle_s > 0:
        _progress(f"idle power ({opts.idle_s:g} s)")
        meter.measure_idle(opts.idle_s)
    _progress("timing" + (f" for {opts.duration_s:g} s" if opts.duration_s else f" {opts.runs} runs"))
    gc.collect()
    ticker = None
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        if meter is not None:
            meter.begin("active")
        latencies: list[int] = []
        ticker = _Ticker(latencies, opts) if sys.stderr.isatty() else None
        start = time.perf_counter()
        _timed(call, opts.runs, opts.duration_s, latencies)
        window_s = time.perf_counter() - start
    finally:
        if ticker is not None:
            ticker.stop()
        if meter is not None:
            meter.end()
        if was_enabled:
            gc.enable()
    _progress(None)
    return latencies, warmup_s, window_s


def _memory_doc(model: LoadedModel, peak_reset: bool) -> dict:
    peak = max(p for p in (memory.rss_peak_bytes(), model.rss_peak_after_load, 0) if p is not None)
    idle = model.rss_before_load
    return {"rss_idle_bytes": idle, "rss_after_load_bytes": model.rss_after_load, "rss_peak_bytes": peak or None,
            "rss_increase_bytes": (peak - idle) if (peak and idle is not None) else None,
            "peak_source": "VmHWM" if memory.rss_bytes() is not None else "getrusage", "peak_reset": peak_reset}


def run_bench(bundle_dir, options=None, loaded: LoadedModel | None = None) -> dict:
    """Benchmark ``bundle_dir``; return the BenchResult document (``schema.py``).

    ``options``: a BenchOptions, a dict of its fields, or None. ``loaded``: a model already loaded with the
    same threads (``serve`` reuses it; its load and first-inference times are those of that load).
    """
    opts = BenchOptions.from_any(options)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    source, reasons = select_source(opts.power, opts.sysfs_root, opts.power_command, opts.power_model)
    before = conditions.snapshot(opts.sysfs_root)
    peak_reset = memory.reset_peak() if loaded is not None else False
    _progress(f"checking and loading {bundle_dir}")
    model = loaded if loaded is not None else load_model(bundle_dir, opts.threads)
    meter = PowerMeter(source, opts.power_interval_s) if source is not None else None
    latencies, warmup_s, window_s = _measure(model, opts, meter)
    n = len(latencies)
    power = meter.summary(n) if meter is not None else none_summary(reasons, opts.sysfs_root)
    settings = opts.as_dict()
    settings["power_model"] = list(opts.power_model) if opts.power_model else None
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "edgec.bench_result",
        "agent_version": agent_version(),
        "bundle_id": model.bundle.bundle_id,
        "bundle": {"path": str(model.bundle.path), "format": model.bundle.format,
                   "model_file": model.bundle.manifest["model_file"],
                   "name": model.bundle.manifest.get("name"),
                   "target": (model.bundle.manifest.get("target") or {}).get("name")},
        "started_at": started,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "runtime": model.runtime_doc(),
        "check": {"files": "ok", "outputs": model.reference, "isa": check_isa(model.bundle.manifest)},
        "timing": {"load_s": model.load_s, "first_inference_s": model.first_inference_s,
                   "warmup_s": warmup_s, "window_s": window_s, "session_reused": loaded is not None},
        "latency_ms": latency_stats(latencies),
        "latency_samples_ms": latency_samples(latencies),
        "throughput_ips": n / window_s if window_s > 0 else None,
        "memory": _memory_doc(model, peak_reset),
        "power": power,
        "conditions": {**conditions.static_conditions(), "threads": opts.threads,
                       "before": before, "after": conditions.snapshot(opts.sysfs_root)},
    }
