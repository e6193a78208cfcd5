"""Energy from fake sensor trees whose values a thread changes while the meter samples them.

The thread writes files atomically, as the kernel's sysfs does. The expected figures are computed here from
what the thread wrote and the phase durations the meter reports; they must match exactly (float rounding aside).
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from edgec.device_agent.power import PowerMeter, select_source
from edgec.device_agent.power.estimated import EstimatedSource

pytestmark = pytest.mark.unit


def put(root, rel: str, value) -> None:
    path = os.path.join(str(root), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as handle:
        handle.write(f"{value}\n")
    os.replace(path + ".tmp", path)


class Rewriter(threading.Thread):
    """Keeps rewriting a set of files with the values the test last gave it (like a live sensor)."""

    def __init__(self, root):
        super().__init__(daemon=True)
        self.root, self.values, self.lock = root, {}, threading.Lock()
        self.stop, self.written = threading.Event(), threading.Event()

    def set(self, values: dict) -> None:
        with self.lock:
            self.values = dict(values)
            self.written.clear()
        assert self.written.wait(5), "the writer thread stalled"

    def run(self):
        while not self.stop.is_set():
            with self.lock:
                for rel, value in self.values.items():
                    put(self.root, rel, value)
                self.written.set()
            time.sleep(0.001)


@pytest.fixture
def rewriter(tmp_path):
    thread = Rewriter(tmp_path)
    thread.start()
    yield thread
    thread.stop.set()
    thread.join()


def two_phases(meter: PowerMeter, rewriter: Rewriter, idle: dict, active: dict) -> None:
    rewriter.set(idle)
    meter.begin("idle")
    time.sleep(0.12)
    meter.end()
    rewriter.set(active)
    meter.begin("active")
    time.sleep(0.2)
    meter.end()


def check_exact(doc: dict, idle_w: float, active_w: float, inferences: int) -> None:
    assert doc["status"] == "ok" and doc["measured"] is True and doc["reason"] is None
    assert doc["idle_watts"] == pytest.approx(idle_w, rel=1e-12)
    assert doc["active_watts"] == pytest.approx(active_w, rel=1e-12)
    assert doc["energy_window_j"] == pytest.approx(active_w * doc["window_s"], rel=1e-12)
    expected = (active_w - idle_w) * doc["window_s"] / inferences
    assert doc["energy_per_inference_j"] == pytest.approx(expected, rel=1e-9)
    assert doc["samples"] >= 3 and doc["sampling_hz"] > 5


def test_hwmon_energy_is_exact(tmp_path, rewriter):
    base = "class/hwmon/hwmon0"
    rewriter.set({f"{base}/name": "ina219", f"{base}/power1_input": 2_400_000})
    source, _ = select_source("auto", str(tmp_path))
    meter = PowerMeter(source, interval_s=0.005)
    two_phases(meter, rewriter, {f"{base}/power1_input": 2_400_000}, {f"{base}/power1_input": 5_150_000})
    check_exact(meter.summary(40), 2.4, 5.15, 40)
    assert meter.summary(40)["source"] == "hwmon:ina219"


def test_jetson_jetpack_energy_is_exact(tmp_path, rewriter):
    base = "class/hwmon/hwmon1"
    rails = {f"{base}/name": "ina3221", f"{base}/in1_label": "VDD_IN", f"{base}/in2_label": "VDD_SOC"}

    def state(ma_in, ma_soc):
        return {**rails, f"{base}/in1_input": 5000, f"{base}/curr1_input": ma_in,
                f"{base}/in2_input": 5000, f"{base}/curr2_input": ma_soc}

    rewriter.set(state(1000, 300))
    source, _ = select_source("jetson", str(tmp_path))
    meter = PowerMeter(source, interval_s=0.005)
    two_phases(meter, rewriter, state(1000, 300), state(1700, 700))
    check_exact(meter.summary(25), 5.0, 8.5, 25)  # VDD_IN only: 5 V x 1.0 A, then 5 V x 1.7 A


def test_jetson_l4t_iio_energy_is_exact(tmp_path, rewriter):
    base = "bus/iio/devices/iio:device0"

    def state(mw_gpu, mw_cpu):
        return {f"{base}/name": "ina3221x", f"{base}/rail_name_0": "POM_5V_GPU", f"{base}/in_power0_input": mw_gpu,
                f"{base}/rail_name_1": "POM_5V_CPU", f"{base}/in_power1_input": mw_cpu}

    rewriter.set(state(500, 700))
    source, _ = select_source("auto", str(tmp_path))
    assert source.describe()["combined"] == "sum of rails"
    meter = PowerMeter(source, interval_s=0.005)
    two_phases(meter, rewriter, state(500, 700), state(2500, 1900))
    check_exact(meter.summary(10), 1.2, 4.4, 10)


def test_rapl_energy_is_exact_across_wraparounds(tmp_path):
    max_uj = 1_000_000
    counters = {0: 900_000, 1: 10_000}
    steps_idle, steps_active = {0: 150_000, 1: 50_000}, {0: 190_000, 1: 110_000}
    for n in counters:
        put(tmp_path, f"class/powercap/intel-rapl:{n}/name", f"package-{n}")
        put(tmp_path, f"class/powercap/intel-rapl:{n}/max_energy_range_uj", max_uj)
        put(tmp_path, f"class/powercap/intel-rapl:{n}/energy_uj", counters[n])
    source, _ = select_source("rapl", str(tmp_path))

    def advance(phase: str, steps: dict, count: int) -> None:
        for _ in range(count):
            for n, step in steps.items():
                counters[n] = (counters[n] + step) % max_uj  # the hardware counter wraps to 0
                put(tmp_path, f"class/powercap/intel-rapl:{n}/energy_uj", counters[n])
            # like a real counter read often enough: the meter reads each value before the next step, so no
            # wrap is missed however the two threads get scheduled on a busy machine
            seen = len(meter.phases[phase].samples)
            deadline = time.monotonic() + 10
            while len(meter.phases[phase].samples) < seen + 2 and time.monotonic() < deadline:
                time.sleep(0.0005)

    meter = PowerMeter(source, interval_s=0.0005)
    for phase, steps, count in (("idle", steps_idle, 20), ("active", steps_active, 30)):
        meter.begin(phase)
        writer = threading.Thread(target=advance, args=(phase, steps, count))
        writer.start()
        writer.join()
        meter.end()
    doc = meter.summary(60)
    idle_j, active_j = 20 * 200_000 / 1e6, 30 * 300_000 / 1e6  # 4 J (wraps 3x), 9 J (package-0 wraps 6x)
    assert doc["kind"] == "energy" and doc["status"] == "ok"
    assert doc["energy_window_j"] == pytest.approx(active_j, rel=1e-12)
    assert doc["idle_watts"] == pytest.approx(idle_j / doc["idle_s"], rel=1e-12)
    assert doc["active_watts"] == pytest.approx(active_j / doc["window_s"], rel=1e-12)
    expected = (active_j - idle_j / doc["idle_s"] * doc["window_s"]) / 60
    assert doc["energy_per_inference_j"] == pytest.approx(expected, rel=1e-9)


def test_sensor_vanishing_mid_window_reports_lost(tmp_path):
    base = tmp_path / "class/hwmon/hwmon0"
    put(tmp_path, "class/hwmon/hwmon0/name", "ina260")
    put(tmp_path, "class/hwmon/hwmon0/power1_input", 3_000_000)
    source, _ = select_source("hwmon", str(tmp_path))
    meter = PowerMeter(source, interval_s=0.002)
    meter.measure_idle(0.05)
    meter.begin("active")
    time.sleep(0.03)
    os.remove(base / "power1_input")  # the I2C sensor dropped off the bus
    time.sleep(0.03)
    meter.end()
    doc = meter.summary(100)
    assert doc["source"] == "hwmon:ina260" and doc["status"] == "lost"
    assert "power1_input" in doc["reason"] and "active" in doc["reason"]
    assert doc["energy_per_inference_j"] is None and doc["active_watts"] is None and doc["idle_watts"] is None


def test_estimated_is_labelled_and_follows_the_model():
    meter = PowerMeter(EstimatedSource(2.7, 6.4))
    meter.measure_idle(0.01)
    meter.begin("active")
    time.sleep(0.02)
    meter.end()
    doc = meter.summary(8)
    assert doc["source"] == "estimated" and doc["measured"] is False and doc["status"] == "estimated"
    assert doc["idle_watts"] == 2.7 and doc["active_watts"] == 6.4
    assert doc["energy_per_inference_j"] == pytest.approx((6.4 - 2.7) * doc["window_s"] / 8)
    assert doc["samples"] is None and doc["sampling_hz"] is None


def test_without_idle_phase_energy_is_gross_and_says_so(tmp_path):
    put(tmp_path, "class/hwmon/hwmon0/name", "ina219")
    put(tmp_path, "class/hwmon/hwmon0/power1_input", 4_000_000)
    source, _ = select_source("hwmon", str(tmp_path))
    meter = PowerMeter(source, interval_s=0.005)
    meter.begin("active")
    time.sleep(0.05)
    meter.end()
    doc = meter.summary(10)
    assert doc["idle_watts"] is None
    assert doc["energy_per_inference_j"] == pytest.approx(4.0 * doc["window_s"] / 10)
    assert "idle power not measured" in doc["reason"]


def test_pi5_pmic_energy_is_exact(tmp_path, rewriter, monkeypatch):
    """The PMIC source runs `vcgencmd pmic_read_adc` per reading; here a fake tool prints a file the thread rewrites."""
    def output(amps: float) -> str:
        return f"  3V3_SYS_A current(1)={amps:.8f}A\n  3V3_SYS_V volt(9)=3.30000000V\n"

    tool = tmp_path / "bin" / "vcgencmd"
    tool.parent.mkdir()
    tool.write_text(f"#!/bin/sh\nexec cat {tmp_path / 'adc.txt'}\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
    rewriter.set({"adc.txt": output(0.5)})
    source, _ = select_source("pmic", str(tmp_path))
    meter = PowerMeter(source, interval_s=0.01)
    assert meter.interval_s == source.min_interval_s  # a process per reading: read less often
    rewriter.set({"adc.txt": output(0.5)})
    meter.begin("idle")
    time.sleep(0.45)
    meter.end()
    rewriter.set({"adc.txt": output(1.5)})
    meter.begin("active")
    time.sleep(0.45)
    meter.end()
    doc = meter.summary(9)
    assert doc["source"] == "pmic:rpi5" and doc["status"] == "ok" and doc["samples"] >= 3
    assert doc["idle_watts"] == pytest.approx(1.65, rel=1e-12) and doc["active_watts"] == pytest.approx(4.95, rel=1e-12)
    assert doc["energy_per_inference_j"] == pytest.approx(3.3 * doc["window_s"] / 9, rel=1e-9)
