"""The service's /metrics: written by the agent with the stdlib, read on the host with prometheus-client's parser."""

from __future__ import annotations

import time

from edgec.deploy.live import assess, parse_metrics
from edgec.device_agent.metrics import ServiceMetrics
from edgec.device_agent.service import InferenceService
from tests.support.sysfs import put


def test_power_and_temperature_appear_only_where_a_sensor_exists(tmp_path):
    sysfs = tmp_path / "sys"
    put(sysfs, "class/hwmon/hwmon3/name", "ina219")
    put(sysfs, "class/hwmon/hwmon3/power1_input", 3_250_000)  # microwatts
    put(sysfs, "class/thermal/thermal_zone0/type", "cpu-thermal")
    put(sysfs, "class/thermal/thermal_zone0/temp", 47_500)
    service = InferenceService(tmp_path / "store", sysfs_root=str(sysfs))
    try:
        deadline = time.monotonic() + 60
        while service.power.watts is None and time.monotonic() < deadline:  # the sampler reads once a second
            time.sleep(0.05)
        sample = parse_metrics(service.render_metrics())
    finally:
        service.stop()
    assert sample["power_source"] == "hwmon:ina219" and sample["power_w"] == 3.25
    assert sample["energy_j"] > 0 and sample["temperature_c"] == 47.5
    assert sample["serving"] is None and sample["requests"] == 0


def test_without_a_sensor_the_metrics_say_none_and_give_no_figure(tmp_path):
    service = InferenceService(tmp_path / "store", sysfs_root=str(tmp_path / "empty"))
    text = service.render_metrics()
    service.stop()
    assert 'edgec_power_sensor{reason="no sensor found",source="none"} 0' in text
    assert "edgec_power_watts" not in text and "edgec_temperature_celsius" not in text
    sample = parse_metrics(text)
    assert sample["power_source"] == "none" and sample["power_w"] is None and sample["temperature_c"] is None


def test_latency_window_restarts_per_bundle_and_drift_is_judged_on_p99_and_errors():
    metrics = ServiceMetrics()
    metrics.switched("aa", None)
    for k in range(100):
        metrics.begin()
        metrics.inference("aa", 0.001 * (k + 1))
        metrics.end("infer", 200, 0.002)
    metrics.begin()
    metrics.end("infer", 400, 0.0, "bad_request")
    sample = parse_metrics(metrics.render("aa", "aa", {}))
    assert sample["window"] == 100 and abs(sample["p99_ms"] - 99.01) < 1e-6 and sample["p50_ms"] == 50.5
    assert sample["requests"] == 101 and sample["errors"] == 1
    assert assess(sample, {"p99_ms": 90.0}, margin_pct=20) == []
    assert assess(sample, {"p99_ms": 50.0}, margin_pct=20) == ["latency"]
    assert assess(sample, {"p99_ms": 90.0}, margin_pct=20, max_error_rate=0.001) == ["errors"]
    metrics.switched("bb", 0.25)
    sample = parse_metrics(metrics.render("bb", "bb", {}))
    assert sample["window"] == 0 and sample["p99_ms"] is None and sample["swaps"] == 1
