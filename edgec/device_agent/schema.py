"""The BenchResult document: one JSON object, the same for local and remote runs.

``SCHEMA_VERSION`` is bumped on any incompatible change (a renamed or removed key, a changed unit); new keys may
appear without a bump. Units are in the key names (``_s``, ``_ms``, ``_bytes``, ``_watts``, ``_j``, ``_hz``).

::

    schema_version   1
    kind             "edgec.bench_result"
    agent_version    sha256[:16] of the agent zipapp that ran (the .pyz file name's hash)
    bundle_id        sha256 of the bundle's manifest.json
    bundle           {path, format, model_file, name, target}
    started_at, finished_at   ISO 8601 UTC
    settings         the BenchOptions used: runs, warmup, threads, duration_s, power, power_command,
                     power_model [idle_w, active_w] | null, sysfs_root, power_interval_s, idle_s
    runtime          {name: onnxruntime|litert, version, package (pip name), threads, xnnpack (litert only)}
    check            {files: "ok", outputs: [{name, ok, max_abs_diff, rel_diff}], isa: {ok: bool|null,
                     issues: [{effect: accuracy|speed, missing, reason}]}}  (a failing bundle never gets a result:
                     the agent refuses it; an isa issue is reported, not refused)
    timing           {load_s, first_inference_s, warmup_s, window_s, session_reused}
    latency_ms       {count, min, p50, p90, p99, max, mean, stdev}  (stdev: sample, n-1)
    latency_samples_ms  per-inference latencies in time order (at most 5000, evenly spaced when more)
    throughput_ips   inferences per second over the timed window (sequential, one at a time)
    memory           {rss_idle_bytes (agent with numpy, before the runtime and model), rss_after_load_bytes, rss_peak_bytes,
                      rss_increase_bytes (peak - idle), peak_source (VmHWM|getrusage), peak_reset}
    power            {source: "hwmon:ina219"|"jetson:ina3221"|"pmic:rpi5"|"rapl"|"battery:BAT0"|"command"|"estimated"|"none",
                      measured: bool (false for estimated and none), kind: power|energy|model|null,
                      status: ok|lost|estimated|none, reason: why lost / why none / null,
                      detail: {paths, rails, layout, notes}, idle_watts, active_watts, energy_window_j,
                      energy_per_inference_j ((active energy - idle_watts x window_s) / count),
                      idle_s, window_s, samples (in the window),
                      sampling_hz (the sampling thread's rate), note (e.g. too few samples) | null}
                     Figures are null when the source is none or was lost.
    conditions       {cpu: {model, arch, cores, cores_usable}, os: {system, release, distribution, hostname},
                      python: {version, implementation, executable}, numpy, threads,
                      before / after: {governor, freq_mhz [per cpu], max_freq_mhz, temperatures_c {zone: C},
                                       throttled {raw, flags} | null (no vcgencmd), loadavg}}

Errors (CLI and ``serve``): ``{"error": {"type": "BundleError", "message": "...", "exit_code": 6}}``.

A document comes from a device, so the host checks it on the way in (``result_problem``): every field above
that is present must have its type (numbers are numbers, not strings; lists and objects are what they say). A
document that fails is stored as an error of that run (``InvalidResult``), never as a result.
"""

from __future__ import annotations

SCHEMA_VERSION = 1
MAX_SAMPLES = 100_000

__all__ = ["SCHEMA_VERSION", "result_problem"]

_NUMBER = "number"
_INT = "int"
_STR = "str"
_BOOL = "bool"
_DICT = "dict"
_LIST_NUMBERS = "list of numbers"

# dotted path -> type, checked when present and not null ("*" matches every key of an object).
_FIELDS = {
    "schema_version": _INT, "kind": _STR, "agent_version": _STR, "bundle_id": _STR, "started_at": _STR,
    "finished_at": _STR, "bundle": _DICT, "bundle.path": _STR, "bundle.format": _STR, "bundle.model_file": _STR,
    "bundle.name": _STR, "bundle.target": _STR, "settings": _DICT, "runtime": _DICT, "runtime.name": _STR,
    "runtime.version": _STR, "runtime.package": _STR, "runtime.threads": _INT, "check": _DICT,
    "timing": _DICT, "timing.load_s": _NUMBER, "timing.first_inference_s": _NUMBER, "timing.warmup_s": _NUMBER,
    "timing.window_s": _NUMBER, "latency_ms": _DICT, "latency_ms.count": _INT, "latency_ms.*": _NUMBER,
    "latency_samples_ms": _LIST_NUMBERS, "throughput_ips": _NUMBER, "memory": _DICT,
    "memory.rss_idle_bytes": _INT, "memory.rss_after_load_bytes": _INT, "memory.rss_peak_bytes": _INT,
    "memory.rss_increase_bytes": _INT, "memory.peak_source": _STR, "power": _DICT, "power.source": _STR,
    "power.measured": _BOOL, "power.kind": _STR, "power.status": _STR, "power.reason": _STR, "power.detail": _DICT,
    "power.idle_watts": _NUMBER, "power.active_watts": _NUMBER, "power.energy_window_j": _NUMBER,
    "power.energy_per_inference_j": _NUMBER, "power.idle_s": _NUMBER, "power.window_s": _NUMBER,
    "power.samples": _INT, "power.sampling_hz": _NUMBER, "power.note": _STR, "conditions": _DICT,
    "conditions.cpu": _DICT, "conditions.cpu.model": _STR, "conditions.cpu.arch": _STR,
    "conditions.cpu.cores": _INT, "conditions.cpu.cores_usable": _INT, "conditions.os": _DICT,
    "conditions.os.*": _STR, "conditions.python": _DICT, "conditions.threads": _INT,
    "conditions.before": _DICT, "conditions.after": _DICT,
    "conditions.before.governor": _STR, "conditions.after.governor": _STR,
    "conditions.before.freq_mhz": _LIST_NUMBERS, "conditions.after.freq_mhz": _LIST_NUMBERS,
    "conditions.before.max_freq_mhz": _NUMBER, "conditions.after.max_freq_mhz": _NUMBER,
    "conditions.before.temperatures_c": _DICT, "conditions.after.temperatures_c": _DICT,
    "conditions.before.temperatures_c.*": _NUMBER, "conditions.after.temperatures_c.*": _NUMBER,
    "conditions.before.loadavg": _LIST_NUMBERS, "conditions.after.loadavg": _LIST_NUMBERS,
    "conditions.before.throttled": _DICT, "conditions.after.throttled": _DICT,
}


def _is(value, kind: str) -> bool:
    if kind == _NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _LIST_NUMBERS:
        return isinstance(value, list) and len(value) <= MAX_SAMPLES and all(
            v is None or _is(v, _NUMBER) for v in value)
    return isinstance(value, {_STR: str, _BOOL: bool, _DICT: dict}[kind])


def _values(doc: dict, path: str):
    """(concrete path, value) of every non-null value at dotted ``path`` ("*": each key)."""
    found = [("", doc)]
    for part in path.split("."):
        step = []
        for where, item in found:
            if not isinstance(item, dict):
                continue
            keys = list(item) if part == "*" else [part]
            step.extend((f"{where}.{k}".lstrip("."), item[k]) for k in keys if item.get(k) is not None)
        found = step
    return found


_REQUIRED = {"latency_ms": _DICT, "latency_ms.p50": _NUMBER, "latency_ms.mean": _NUMBER}


def result_problem(doc) -> str | None:
    """The first field of a BenchResult document that is missing (``latency_ms`` with its p50 and mean) or of
    the wrong type (``"latency_ms.mean: expected a number, got str"``); None when the document is sound."""
    if not isinstance(doc, dict):
        return f"expected a JSON object, got {type(doc).__name__}"
    for path, kind in _REQUIRED.items():
        if not _values(doc, path):
            return f"{path}: missing (expected {kind})"
    for path, kind in _FIELDS.items():
        for where, value in _values(doc, path):
            if not _is(value, kind):
                return f"{where}: expected {'a' if kind != _INT else 'an'} {kind}, got {type(value).__name__}"
    return None
