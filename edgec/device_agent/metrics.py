"""The inference service's counters, written in the Prometheus text exposition format (0.0.4) with the stdlib.

Two latency views: a cumulative histogram of whole-request time (``edgec_request_duration_seconds``, what a
Prometheus server aggregates), and a summary of runtime-call time over the last ``WINDOW`` inferences of the
bundle now served (``edgec_inference_seconds{quantile=...}``): the figure compared with the bundle's benchmark,
which timed the same call. The window restarts when the service switches bundles, so a canary's p99 is the new
bundle's alone. Device readings (temperature, throttling, power) appear only where the device has the sensor;
otherwise ``edgec_power_sensor`` says ``none`` and why, never a made-up figure.
"""

from __future__ import annotations

import collections
import threading
import time

from edgec.device_agent.stats import percentile

__all__ = ["BUCKETS", "WINDOW", "ServiceMetrics", "escape"]

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
WINDOW = 2048
QUANTILES = (0.5, 0.9, 0.99)


def escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: dict) -> str:
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in sorted(pairs.items())) + "}" if pairs else ""


def _num(value: float) -> str:
    return repr(float(value)) if value == value else "NaN"


class ServiceMetrics:
    """Thread-safe counters of one service process."""

    def __init__(self):
        self._lock = threading.Lock()
        self.started = time.time()
        self.requests = collections.Counter()  # (endpoint, code) -> n
        self.errors = collections.Counter()  # reason -> n
        self.buckets = [0] * len(BUCKETS)
        self.duration_sum, self.duration_count = 0.0, 0
        self.in_flight = 0
        self.window: collections.deque = collections.deque(maxlen=WINDOW)
        self.window_bundle: str | None = None
        self.inferences = collections.Counter()  # bundle_id -> n
        self.swaps, self.swap_failures, self.overloaded = 0, 0, 0
        self.last_swap_s: float | None = None

    def begin(self) -> None:
        with self._lock:
            self.in_flight += 1

    def end(self, endpoint: str, code: int, seconds: float, reason: str | None = None) -> None:
        with self._lock:
            self.in_flight -= 1
            self.requests[(endpoint, code)] += 1
            if reason:
                self.errors[reason] += 1
            if endpoint == "infer":
                self.duration_sum += seconds
                self.duration_count += 1
                for k, bound in enumerate(BUCKETS):
                    if seconds <= bound:
                        self.buckets[k] += 1

    def inference(self, bundle_id: str, seconds: float) -> None:
        with self._lock:
            self.inferences[bundle_id] += 1
            if bundle_id == self.window_bundle:
                self.window.append(seconds)

    def overload(self) -> None:
        with self._lock:
            self.overloaded += 1
            self.requests[("any", 503)] += 1
            self.errors["overloaded"] += 1

    def switched(self, bundle_id: str, seconds: float | None) -> None:
        with self._lock:
            self.window_bundle = bundle_id
            self.window.clear()
            if seconds is not None:
                self.swaps += 1
                self.last_swap_s = seconds

    def swap_failed(self) -> None:
        with self._lock:
            self.swap_failures += 1

    def render(self, serving: str | None, active: str | None, device: dict) -> str:
        """The whole exposition; ``device`` holds rss_bytes, temperatures_c, throttled, power."""
        with self._lock:
            lines = self._counters(serving, active) + self._latency()
        return "\n".join(lines + _device_lines(device)) + "\n"

    def _counters(self, serving, active) -> list[str]:
        out = ["# HELP edgec_requests_total HTTP requests answered, by endpoint and status code.",
               "# TYPE edgec_requests_total counter"]
        out += [f"edgec_requests_total{_labels({'endpoint': e, 'code': c})} {n}"
                for (e, c), n in sorted(self.requests.items())]
        out += ["# HELP edgec_request_errors_total Requests answered with an error, by reason.",
                "# TYPE edgec_request_errors_total counter"]
        out += [f"edgec_request_errors_total{_labels({'reason': r})} {n}" for r, n in sorted(self.errors.items())]
        out += ["# HELP edgec_inferences_total Inferences run, by bundle.", "# TYPE edgec_inferences_total counter"]
        out += [f"edgec_inferences_total{_labels({'bundle_id': b})} {n}" for b, n in sorted(self.inferences.items())]
        out += ["# HELP edgec_in_flight_requests Requests being handled now.", "# TYPE edgec_in_flight_requests gauge",
                f"edgec_in_flight_requests {self.in_flight}",
                "# HELP edgec_bundle_swaps_total Hot swaps to a newly activated bundle.",
                "# TYPE edgec_bundle_swaps_total counter", f"edgec_bundle_swaps_total {self.swaps}",
                "# HELP edgec_bundle_swap_failures_total Activated bundles refused (hashes or reference outputs).",
                "# TYPE edgec_bundle_swap_failures_total counter",
                f"edgec_bundle_swap_failures_total {self.swap_failures}",
                "# HELP edgec_uptime_seconds Seconds since the service started.",
                "# TYPE edgec_uptime_seconds gauge", f"edgec_uptime_seconds {_num(time.time() - self.started)}",
                "# HELP edgec_start_time_seconds When the service started (Unix time).",
                "# TYPE edgec_start_time_seconds gauge", f"edgec_start_time_seconds {_num(self.started)}",
                "# HELP edgec_active_bundle_info The bundle served (serving) and the one the store names (active).",
                "# TYPE edgec_active_bundle_info gauge"]
        out += [f"edgec_active_bundle_info{_labels({'bundle_id': b, 'role': role})} 1"
                for role, b in (("serving", serving), ("active", active)) if b]
        if self.last_swap_s is not None:
            out += ["# HELP edgec_last_swap_seconds Load, self-check and switch time of the last hot swap.",
                    "# TYPE edgec_last_swap_seconds gauge", f"edgec_last_swap_seconds {_num(self.last_swap_s)}"]
        return out

    def _latency(self) -> list[str]:
        out = ["# HELP edgec_request_duration_seconds Time to answer an inference request.",
               "# TYPE edgec_request_duration_seconds histogram"]
        out += [f'edgec_request_duration_seconds_bucket{{le="{bound}"}} {n}' for bound, n in zip(BUCKETS, self.buckets)]
        out += [f'edgec_request_duration_seconds_bucket{{le="+Inf"}} {self.duration_count}',
                f"edgec_request_duration_seconds_sum {_num(self.duration_sum)}",
                f"edgec_request_duration_seconds_count {self.duration_count}",
                f"# HELP edgec_inference_seconds Runtime call time over the last {WINDOW} inferences of the "
                "served bundle.", "# TYPE edgec_inference_seconds summary"]
        ordered = sorted(self.window)
        bundle = {"bundle_id": self.window_bundle} if self.window_bundle else {}
        for q in QUANTILES:
            value = percentile(ordered, q * 100) if ordered else float("nan")
            out.append(f"edgec_inference_seconds{_labels({**bundle, 'quantile': q})} {_num(value)}")
        out += [f"edgec_inference_seconds_sum{_labels(bundle)} {_num(sum(ordered))}",
                f"edgec_inference_seconds_count{_labels(bundle)} {len(ordered)}"]
        return out


def _device_lines(device: dict) -> list[str]:
    out = []
    if device.get("rss_bytes") is not None:
        out += ["# HELP edgec_process_resident_memory_bytes Resident memory of the service.",
                "# TYPE edgec_process_resident_memory_bytes gauge",
                f"edgec_process_resident_memory_bytes {device['rss_bytes']}"]
    temps = device.get("temperatures_c") or {}
    if temps:
        out += ["# HELP edgec_temperature_celsius Thermal zones.", "# TYPE edgec_temperature_celsius gauge"]
        out += [f"edgec_temperature_celsius{_labels({'zone': z})} {_num(t)}" for z, t in sorted(temps.items())]
    throttled = device.get("throttled")
    if isinstance(throttled, dict) and "flags" in throttled:
        out += ["# HELP edgec_throttled Raspberry Pi firmware throttling flags (vcgencmd get_throttled).",
                "# TYPE edgec_throttled gauge", f"edgec_throttled {int(throttled['raw'], 16)}",
                "# HELP edgec_throttled_flag Each throttling flag set now or since boot.",
                "# TYPE edgec_throttled_flag gauge"]
        out += [f"edgec_throttled_flag{_labels({'flag': f})} 1" for f in throttled["flags"]]
    power = device.get("power") or {}
    out += ["# HELP edgec_power_sensor The power sensor read (value 0 and source none: no sensor here).",
            "# TYPE edgec_power_sensor gauge",
            f"edgec_power_sensor{_labels({'source': power.get('source', 'none'), 'reason': power.get('reason', '')})}"
            f" {1 if power.get('watts') is not None else 0}"]
    if power.get("watts") is not None:
        out += ["# HELP edgec_power_watts Power drawn now.", "# TYPE edgec_power_watts gauge",
                f"edgec_power_watts {_num(power['watts'])}",
                "# HELP edgec_energy_joules_total Energy since the service started (sampled every second).",
                "# TYPE edgec_energy_joules_total counter", f"edgec_energy_joules_total {_num(power['joules'])}"]
    return out
