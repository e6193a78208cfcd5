"""Power sources found in fake sysfs trees: every layout, units, selection, and the no-sensor path."""

from __future__ import annotations

import os
import sys

import pytest

from edgec.device_agent.power import none_summary, select_source
from edgec.device_agent.power.command import CommandSource, parse_reading
from edgec.device_agent.power.estimated import parse_model
from edgec.device_agent.power.rapl import unwrap_delta
from edgec.errors import UsageError
from tests.support.sysfs import put

pytestmark = pytest.mark.unit


def test_hwmon_ina219_power_input_in_microwatts(tmp_path):
    put(tmp_path, "class/hwmon/hwmon0/name", "coretemp")
    put(tmp_path, "class/hwmon/hwmon3/name", "ina219")
    put(tmp_path, "class/hwmon/hwmon3/power1_input", 3_250_000)
    source, reasons = select_source("auto", str(tmp_path))
    assert source.name == "hwmon:ina219" and source.kind == "power" and source.measured
    assert source.read() == pytest.approx(3.25)
    assert any("ina3221" in r for r in reasons)  # jetson was tried first and said why not


def test_hwmon_ina226_current_times_bus_voltage(tmp_path):
    put(tmp_path, "class/hwmon/hwmon1/name", "ina226")
    put(tmp_path, "class/hwmon/hwmon1/curr1_input", 500)  # mA
    put(tmp_path, "class/hwmon/hwmon1/in1_input", 5100)  # mV
    source, _ = select_source("hwmon", str(tmp_path))
    assert source.name == "hwmon:ina226"
    assert source.read() == pytest.approx(2.55)


def jetpack_tree(root, vdd_in=True):
    base = "class/hwmon/hwmon2"
    put(root, f"{base}/name", "ina3221")
    rails = [("VDD_IN", 5000, 1200), ("VDD_CPU_GPU_CV", 5000, 400), ("VDD_SOC", 5000, 300)]
    if not vdd_in:
        rails = rails[1:]
    for k, (label, mv, ma) in enumerate(rails, start=1):
        put(root, f"{base}/in{k}_label", label)
        put(root, f"{base}/in{k}_input", mv)
        put(root, f"{base}/curr{k}_input", ma)
    return base


def test_jetson_jetpack_hwmon_reads_the_total_rail_only(tmp_path):
    jetpack_tree(tmp_path)
    source, _ = select_source("auto", str(tmp_path))
    assert source.name == "jetson:ina3221"
    assert source.describe()["rails"] == ["VDD_IN"] and source.describe()["layout"] == "jetpack-hwmon"
    assert source.read() == pytest.approx(6.0)


def test_jetson_without_total_rail_sums_rails(tmp_path):
    jetpack_tree(tmp_path, vdd_in=False)
    source, _ = select_source("jetson", str(tmp_path))
    assert source.describe()["combined"] == "sum of rails"
    assert source.read() == pytest.approx(3.5)


def test_jetson_l4t_iio_layout_in_milliwatts(tmp_path):
    base = "bus/iio/devices/iio:device0"
    put(tmp_path, f"{base}/name", "ina3221x")
    for k, (rail, mw) in enumerate([("POM_5V_IN", 4200), ("POM_5V_GPU", 900), ("POM_5V_CPU", 1100)]):
        put(tmp_path, f"{base}/rail_name_{k}", rail)
        put(tmp_path, f"{base}/in_power{k}_input", mw)
    source, _ = select_source("jetson", str(tmp_path))
    assert source.describe()["layout"] == "l4t-iio" and source.describe()["rails"] == ["POM_5V_IN"]
    assert source.read() == pytest.approx(4.2)


def rapl_tree(root, energy_uj=0, max_uj=262143328850):
    for n, name in ((0, "package-0"), (1, "package-1")):
        put(root, f"class/powercap/intel-rapl:{n}/name", name)
        put(root, f"class/powercap/intel-rapl:{n}/energy_uj", energy_uj)
        put(root, f"class/powercap/intel-rapl:{n}/max_energy_range_uj", max_uj)
    put(root, "class/powercap/intel-rapl:0:0/name", "core")  # a sub-domain: already inside package-0
    put(root, "class/powercap/intel-rapl:0:0/energy_uj", 5)
    put(root, "class/powercap/intel-rapl:0:0/max_energy_range_uj", max_uj)


def test_rapl_sums_packages_and_unwraps(tmp_path):
    rapl_tree(tmp_path, energy_uj=900_000, max_uj=1_000_000)
    source, _ = select_source("rapl", str(tmp_path))
    assert source.name == "rapl" and source.kind == "energy"
    assert source.describe()["domains"] == ["package-0", "package-1"]
    assert source.read() == 0.0
    put(tmp_path, "class/powercap/intel-rapl:0/energy_uj", 100_000)  # wrapped: +200_000 uJ
    put(tmp_path, "class/powercap/intel-rapl:1/energy_uj", 950_000)  # +50_000 uJ
    assert source.read() == pytest.approx(0.25)


def test_rapl_psys_alone_when_present(tmp_path):
    rapl_tree(tmp_path)
    put(tmp_path, "class/powercap/intel-rapl:2/name", "psys")
    put(tmp_path, "class/powercap/intel-rapl:2/energy_uj", 1)
    put(tmp_path, "class/powercap/intel-rapl:2/max_energy_range_uj", 100)
    source, _ = select_source("rapl", str(tmp_path))
    assert source.describe()["domains"] == ["psys"]


def test_unwrap_delta():
    assert unwrap_delta(10, 25, 100) == 15
    assert unwrap_delta(90, 5, 100) == 15


def test_rapl_root_only_is_explained(tmp_path, monkeypatch):
    # CI runs as root, which reads any file: emulate the kernel's EACCES on energy_uj (Linux >= 5.10).
    from edgec.device_agent.power import rapl

    rapl_tree(tmp_path)
    real = rapl.read_number

    def read_number(path):
        if path.endswith("energy_uj"):
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(rapl, "read_number", read_number)
    with pytest.raises(UsageError, match="root only"):
        select_source("rapl", str(tmp_path))
    assert select_source("auto", str(tmp_path))[0] is None


def test_battery_power_now_and_status_note(tmp_path):
    put(tmp_path, "class/power_supply/AC/type", "Mains")
    put(tmp_path, "class/power_supply/BAT0/type", "Battery")
    put(tmp_path, "class/power_supply/BAT0/status", "Charging")
    put(tmp_path, "class/power_supply/BAT0/current_now", 1_500_000)  # uA
    put(tmp_path, "class/power_supply/BAT0/voltage_now", 12_000_000)  # uV
    source, _ = select_source("battery", str(tmp_path))
    assert source.name == "battery:BAT0"
    assert source.read() == pytest.approx(18.0)
    assert "not 'Discharging'" in source.describe()["note"]


def test_no_sensor_says_none_with_what_was_looked_for(tmp_path):
    source, reasons = select_source("auto", str(tmp_path))
    assert source is None
    doc = none_summary(reasons, str(tmp_path))
    assert doc["source"] == "none" and doc["measured"] is False and doc["status"] == "none"
    assert doc["energy_per_inference_j"] is None and doc["active_watts"] is None
    assert "powercap" in doc["reason"] and str(tmp_path) in doc["reason"]


def test_auto_never_falls_back_to_an_estimate(tmp_path):
    source, _ = select_source("auto", str(tmp_path), model=(2.0, 5.0))
    assert source is None


def test_named_source_missing_is_an_error(tmp_path):
    with pytest.raises(UsageError, match="--power rapl: not found"):
        select_source("rapl", str(tmp_path))
    with pytest.raises(UsageError, match="unknown source"):
        select_source("wattmeter", str(tmp_path))
    with pytest.raises(UsageError, match="no --power-model"):
        select_source("estimated", str(tmp_path))


def test_list_falls_through_to_estimated(tmp_path):
    source, reasons = select_source("hwmon,estimated", str(tmp_path), model=(2.5, 6.0))
    assert source.name == "estimated" and source.measured is False
    assert len(reasons) == 1


def test_power_model_parsing():
    assert parse_model("2.7,6.4") == (2.7, 6.4)
    for bad in ("2.7", "a,b", "5,2", "-1,3"):
        with pytest.raises(UsageError):
            parse_model(bad)


def test_command_source_reads_watts_or_joules(tmp_path):
    assert parse_reading("4.5\n") == ("power", 4.5)
    assert parse_reading('{"watts": 3}') == ("power", 3.0)
    assert parse_reading('{"joules": 12.5}') == ("energy", 12.5)
    with pytest.raises(ValueError):
        parse_reading("n/a")
    script = tmp_path / "meter.py"
    script.write_text("print('{\"watts\": 7.25}')\n")
    source = CommandSource(f"{sys.executable} {script}")
    assert source.kind == "power" and source.read() == 7.25
    with pytest.raises(UsageError, match="power-command"):
        CommandSource(f"{sys.executable} -c \"print('n/a')\"")


PMIC_OUTPUT = """\
     3V7_WL_SW_A current(0)=0.10000000A
     3V3_SYS_A current(1)=0.50000000A
     DDR_VDD2_A current(4)=0.20000000A
     3V7_WL_SW_V volt(8)=3.70000000V
     3V3_SYS_V volt(9)=3.30000000V
     EXT5V_V volt(24)=5.10000000V
"""


def fake_vcgencmd(folder, monkeypatch, body: str):
    """A `vcgencmd` on PATH that answers like the Pi firmware's (there is none on this machine)."""
    tool = folder / "bin" / "vcgencmd"
    tool.parent.mkdir(parents=True, exist_ok=True)
    tool.write_text(f"#!/bin/sh\n{body}\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
    return tool


def test_pi5_pmic_sums_rails_with_current_and_voltage(tmp_path, monkeypatch):
    from edgec.device_agent.power.pmic import parse_pmic

    assert parse_pmic(PMIC_OUTPUT) == {"3V3_SYS": pytest.approx(1.65), "3V7_WL_SW": pytest.approx(0.37)}
    (tmp_path / "out.txt").write_text(PMIC_OUTPUT)
    fake_vcgencmd(tmp_path, monkeypatch, f'[ "$1" = pmic_read_adc ] && exec cat {tmp_path / "out.txt"}\nexit 1')
    source, reasons = select_source("auto", str(tmp_path / "sys"))
    assert source.name == "pmic:rpi5" and source.min_interval_s >= 0.1
    assert source.read() == pytest.approx(2.02) and source.describe()["rails"] == ["3V3_SYS", "3V7_WL_SW"]
    assert len(reasons) == 2  # jetson and hwmon were tried first


def test_pi4_vcgencmd_without_pmic_is_not_a_power_source(tmp_path, monkeypatch):
    fake_vcgencmd(tmp_path, monkeypatch, 'echo "error=1 error_msg=\\"Command not registered\\"" >&2; exit 1')
    source, reasons = select_source("auto", str(tmp_path))
    assert source is None and any("pmic_read_adc" in r and "unusable" in r for r in reasons)


def test_throttled_flags_come_from_vcgencmd(tmp_path, monkeypatch):
    from edgec.device_agent.conditions import snapshot

    fake_vcgencmd(tmp_path, monkeypatch, '[ "$1" = get_throttled ] && echo throttled=0x50005')
    assert snapshot(str(tmp_path))["throttled"]["flags"] == [
        "under_voltage", "throttled", "under_voltage_occurred", "throttled_occurred"]


def test_jetson_agx_rails_on_two_chips_are_summed(tmp_path):
    for hw, rails in (("hwmon1", [("VDD_GPU_SOC", 5000, 600), ("VDD_CPU_CV", 5000, 400)]),
                      ("hwmon4", [("VIN_SYS_5V0", 5000, 300)])):
        put(tmp_path, f"class/hwmon/{hw}/name", "ina3221")
        for k, (label, mv, ma) in enumerate(rails, start=1):
            put(tmp_path, f"class/hwmon/{hw}/in{k}_label", label)
            put(tmp_path, f"class/hwmon/{hw}/in{k}_input", mv)
            put(tmp_path, f"class/hwmon/{hw}/curr{k}_input", ma)
    source, _ = select_source("jetson", str(tmp_path))
    assert source.describe()["rails"] == ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"]
    assert source.read() == pytest.approx(6.5)
