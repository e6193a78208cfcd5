"""Latency statistics, option validation, throttling flags and the result table."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.device_agent.conditions import decode_throttled
from edgec.device_agent.options import BenchOptions
from edgec.device_agent.stats import latency_stats
from edgec.errors import UsageError

pytestmark = pytest.mark.unit


def test_latency_stats_match_numpy():
    rng = np.random.default_rng(3)
    ns = [int(x) for x in rng.lognormal(13, 0.4, size=997)]
    stats = latency_stats(ns)
    ms = np.array(ns) / 1e6
    assert stats["count"] == 997
    for key, q in (("p50", 50), ("p90", 90), ("p99", 99)):
        assert stats[key] == pytest.approx(np.percentile(ms, q), rel=1e-12)
    assert stats["min"] == ms.min() and stats["max"] == ms.max()
    assert stats["mean"] == pytest.approx(ms.mean(), rel=1e-12)
    assert stats["stdev"] == pytest.approx(ms.std(ddof=1), rel=1e-9)


def test_latency_stats_single_run():
    assert latency_stats([2_000_000]) == {"count": 1, "min": 2.0, "p50": 2.0, "p90": 2.0, "p99": 2.0,
                                          "max": 2.0, "mean": 2.0, "stdev": 0.0}


@pytest.mark.parametrize("bad, match", [
    ({"runs": 0}, "--runs 0: must be >= 1"),
    ({"runs": -5}, "--runs -5"),
    ({"warmup": -1}, "--warmup -1"),
    ({"threads": 0}, "--threads 0"),
    ({"duration_s": 0}, "--duration 0"),
    ({"duration_s": -2.5}, "--duration -2.5"),
    ({"idle_s": -1}, "--idle -1"),
    ({"power_interval_s": 0}, "--power-interval 0"),
    ({"runs": 2.5}, "whole number"),
    ({"power_model": (5, 2)}, "--power-model"),
    ({"bogus": 1}, "unknown bogus"),
])
def test_bad_options_are_one_line_usage_errors(bad, match):
    with pytest.raises(UsageError, match=match) as info:
        BenchOptions.from_any(bad)
    assert "\n" not in str(info.value)


def test_options_defaults_and_dict():
    assert BenchOptions.from_any(None) == BenchOptions()
    opts = BenchOptions.from_any({"runs": 5, "power_model": [1, 2]})
    assert opts.runs == 5 and opts.power_model == (1.0, 2.0)


def test_throttled_flags():
    assert decode_throttled("throttled=0x0") == {"raw": "0x0", "flags": []}
    assert decode_throttled("throttled=0x50005\n") == {
        "raw": "0x50005", "flags": ["under_voltage", "throttled", "under_voltage_occurred", "throttled_occurred"]}


def test_conditions_read_from_the_sysfs_root(tmp_path):
    from edgec.device_agent.conditions import snapshot

    cpu = tmp_path / "devices/system/cpu/cpu0/cpufreq"
    cpu.mkdir(parents=True)
    (cpu / "scaling_governor").write_text("ondemand\n")
    (cpu / "scaling_cur_freq").write_text("1500000\n")
    (cpu / "scaling_max_freq").write_text("1800000\n")
    zone = tmp_path / "class/thermal/thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("48312\n")
    snap = snapshot(str(tmp_path))
    assert snap["governor"] == "ondemand" and snap["freq_mhz"] == [1500.0] and snap["max_freq_mhz"] == 1800.0
    assert snap["temperatures_c"] == {"thermal_zone0:cpu-thermal": pytest.approx(48.312)}
