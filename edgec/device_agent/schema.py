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
"""

SCHEMA_VERSION = 1

__all__ = ["SCHEMA_VERSION"]
