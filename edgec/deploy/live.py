"""What a device's inference service reports, read over SSH and judged against the bundle's benchmark.

The agent's ``status`` command fetches ``/healthz`` and ``/metrics`` from the service over the device's
loopback; here the Prometheus text is parsed with ``prometheus_client``'s parser (never by hand) into one
sample: the bundle served, uptime, request and error counts, the live p50/p99 of the runtime call over the
service's window, temperature, throttling and power. ``assess`` flags drift: p99 beyond the baseline (the
newest benchmark of that bundle in the results database) plus a margin, or an error rate above a bound.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from edgec.deploy.inventory import Device
from edgec.deploy.remote import agent_call, agent_zipapp
from edgec.deploy.ssh import SshOptions, connect
from edgec.errors import DeviceError, EdgecError

__all__ = ["assess", "device_sample", "farm_status", "parse_metrics", "sample_from_status"]


def _families(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        return {family.name: family for family in text_string_to_metric_families(text)}
    except ValueError as exc:  # a device's output is untrusted input
        raise DeviceError(f"the service's /metrics is not valid Prometheus text ({exc})") from None


def _samples(families: dict, name: str) -> list:
    family = families.get(name)
    return list(family.samples) if family is not None else []


def _total(families: dict, name: str, keep=lambda labels: True) -> float:
    """The sum of a family's own samples (a counter's family drops ``_total``; its samples keep it)."""
    return sum(s.value for s in _samples(families, name) if s.name in (name, name + "_total") and keep(s.labels))


def _one(families: dict, name: str) -> float | None:
    found = [s.value for s in _samples(families, name) if s.name in (name, name + "_total")]
    return found[0] if found else None


def parse_metrics(text: str) -> dict:
    """The figures ``farm status`` shows, from the service's Prometheus text."""
    fam = _families(text)
    info = {s.labels.get("role"): s.labels.get("bundle_id") for s in _samples(fam, "edgec_active_bundle_info")}
    quantiles = {s.labels.get("quantile"): s.value for s in _samples(fam, "edgec_inference_seconds")
                 if s.name == "edgec_inference_seconds"}
    count = [s.value for s in _samples(fam, "edgec_inference_seconds") if s.name.endswith("_count")]
    temps = [s.value for s in _samples(fam, "edgec_temperature_celsius")]
    sensor = next((s.labels for s in _samples(fam, "edgec_power_sensor")), {})

    def ms(q: str):
        value = quantiles.get(q)
        return value * 1e3 if value is not None and value == value else None

    return {"serving": info.get("serving"), "active": info.get("active"),
            "uptime_s": _one(fam, "edgec_uptime_seconds"), "started_at": _one(fam, "edgec_start_time_seconds"),
            "requests": int(_total(fam, "edgec_requests", lambda lb: lb.get("endpoint") == "infer")),
            "errors": int(_total(fam, "edgec_requests", lambda lb: lb.get("endpoint") == "infer"
                                 and str(lb.get("code", "")).startswith(("4", "5")))
                          + _total(fam, "edgec_requests", lambda lb: lb.get("endpoint") == "any")),
            "in_flight": _one(fam, "edgec_in_flight_requests"),
            "p50_ms": ms("0.5"), "p99_ms": ms("0.99"), "window": int(count[0]) if count else 0,
            "swaps": _one(fam, "edgec_bundle_swaps"),
            "rss_bytes": _one(fam, "edgec_process_resident_memory_bytes"),
            "temperature_c": max(temps) if temps else None,
            "throttled": sorted(s.labels.get("flag") for s in _samples(fam, "edgec_throttled_flag")),
            "power_w": _one(fam, "edgec_power_watts"), "energy_j": _one(fam, "edgec_energy_joules"),
            "power_source": sensor.get("source", "none")}


def assess(sample: dict, baseline: dict | None, margin_pct: float, max_error_rate: float = 0.01) -> list[str]:
    """Why this sample is out of the baseline's band: ``latency`` and/or ``errors`` (empty: within)."""
    drift = []
    base = (baseline or {}).get("p99_ms")
    if base and sample.get("p99_ms") is not None and sample["p99_ms"] > base * (1 + margin_pct / 100):
        drift.append("latency")
    requests = sample.get("requests") or 0
    if requests and (sample.get("errors") or 0) / requests > max_error_rate:
        drift.append("errors")
    return drift


def sample_from_status(device: str, status: dict, baseline_for=None, margin_pct: float = 50.0,
                       previous: dict | None = None) -> dict:
    """One live sample from the agent's ``status`` document; ``baseline_for(bundle_id)`` gives the baseline."""
    now = time.time()
    sample = {"at": now, "device": device, "running": bool(status.get("running")), "active": status.get("active")}
    if not status.get("metrics"):
        return {**sample, "bundle_id": None, "drift": ["down"] if status.get("active") else []}
    sample.update(parse_metrics(status["metrics"]))
    sample["bundle_id"] = sample.get("serving")
    if previous and previous.get("started_at") == sample.get("started_at") and now > previous["at"]:
        sample["rate_rps"] = (sample["requests"] - (previous.get("requests") or 0)) / (now - previous["at"])
    elif sample.get("uptime_s"):
        sample["rate_rps"] = sample["requests"] / sample["uptime_s"]
    base = baseline_for(sample["bundle_id"]) if baseline_for and sample["bundle_id"] else None
    sample["baseline_p99_ms"] = (base or {}).get("p99_ms")
    sample["baseline_p50_ms"] = (base or {}).get("p50_ms")
    sample["drift"] = assess(sample, base, margin_pct)
    if sample.get("active") and sample["active"] != sample["bundle_id"]:
        sample["drift"].append("not-serving-active")
    return sample


def device_status(conn, device: Device, agent: str, edgec_dir: str, probe: str | None = None,
                  probe_count: int = 0, timeout: float = 60.0) -> dict:
    """The agent's ``status`` document (``/healthz``, ``/metrics``, the store's pointer) over an open connection."""
    argv = [device.python, agent, "status", "--edgec-dir", edgec_dir]
    if probe and probe_count:
        argv += ["--probe", probe, "--probe-count", str(probe_count)]
    return agent_call(conn, device, argv, timeout=timeout, what="agent status")


def device_sample(device: Device, ssh: SshOptions, store=None, margin_pct: float = 50.0) -> dict:
    """Connect, ask the service, and return (and store, when ``store``) one sample; errors become a sample."""
    from edgec.deploy.push import install_agent, remote_home

    previous = None
    if store is not None:
        past = store.live_samples(device.name, limit=1)
        previous = {**past[0], "at": past[0]["at"]} if past else None
    try:
        with connect(device.ssh_target(), ssh) as conn:
            agent = install_agent(conn, agent_zipapp())
            status = device_status(conn, device, agent, f"{remote_home(conn)}/.edgec")
        baseline_for = (lambda b: store.baseline(b, device.name)) if store is not None else None
        sample = sample_from_status(device.name, status, baseline_for, margin_pct, previous)
    except EdgecError as exc:
        sample = {"at": time.time(), "device": device.name, "bundle_id": None, "drift": ["unreachable"],
                  "error": {"type": type(exc).__name__, "message": " ".join(str(exc).split())}}
    if store is not None:
        store.record_live(sample)
    return sample


def farm_status(devices: list[Device], ssh: SshOptions, store=None, margin_pct: float = 50.0,
                parallel: int = 8) -> list[dict]:
    """One sample per device, in inventory order, taken in parallel."""
    agent_zipapp()
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(devices) or 1))) as pool:
        return list(pool.map(lambda d: device_sample(d, ssh, store, margin_pct), devices))
