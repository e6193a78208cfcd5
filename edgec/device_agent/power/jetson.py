"""NVIDIA Jetson INA3221 power rails, in both kernel layouts.

- JetPack 5/6 (upstream ``ina3221`` hwmon driver): ``SYSFS/class/hwmon/hwmonN/name`` is ``ina3221``, each rail
  ``inK_label`` (e.g. ``VDD_IN``), ``inK_input`` bus voltage in mV and ``currK_input`` in mA.
- L4T 32 (``ina3221x`` iio driver): ``SYSFS/bus/iio/devices/iio:deviceN/name`` is ``ina3221x``, each rail
  ``rail_name_K`` and ``in_power K_input`` in mW (also under ``bus/i2c/drivers/ina3221x/*/iio:device*``).

When a rail measures the whole module's input (``VDD_IN``, ``POM_5V_IN``) it alone is read; otherwise the rails
of every INA3221 found are summed (AGX boards have no total rail and two chips) and the result says so.
"""

from __future__ import annotations

import os
import re

from edgec.device_agent.power._sysfs import PowerSource, children, read_number, read_text

__all__ = ["TOTAL_RAILS", "JetsonSource", "find"]

TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")
LOOKED_FOR = ("class/hwmon/hwmon*/name == ina3221 (JetPack 5/6), "
              "bus/iio/devices/iio:device*/name == ina3221x (L4T 32)")


class JetsonSource(PowerSource):
    """Rails as (label, reader) pairs; ``read`` sums them (one rail when a total rail exists)."""

    kind = "power"

    def __init__(self, layout: str, rails: list[tuple[str, list[str], float]]):
        # rails: (label, files whose values multiply, scale to watts)
        self.name = "jetson:ina3221"
        totals = [r for r in rails if r[0].upper() in TOTAL_RAILS]
        self.rails = totals[:1] or rails
        self.detail = {
            "layout": layout,
            "rails": [r[0] for r in self.rails],
            "combined": "total rail" if totals else "sum of rails",
            "files": [f for r in self.rails for f in r[1]],
        }

    def read(self) -> float:
        total = 0.0
        for _, files, scale in self.rails:
            value = scale
            for path in files:
                value *= read_number(path)
            total += value
        return total


def _hwmon_rails(folder: str) -> list[tuple[str, list[str], float]]:
    rails = []
    for entry in sorted(os.listdir(folder)):
        match = re.fullmatch(r"in(\d+)_label", entry)
        if not match:
            continue
        k = match.group(1)
        volt, curr = os.path.join(folder, f"in{k}_input"), os.path.join(folder, f"curr{k}_input")
        if os.path.exists(volt) and os.path.exists(curr):
            rails.append((read_text(os.path.join(folder, entry)), [volt, curr], 1e-6))  # mV * mA -> W
    return rails


def _iio_rails(folder: str) -> list[tuple[str, list[str], float]]:
    rails = []
    for entry in sorted(os.listdir(folder)):
        match = re.fullmatch(r"rail_name_(\d+)", entry)
        power = os.path.join(folder, f"in_power{match.group(1)}_input") if match else ""
        if match and os.path.exists(power):
            rails.append((read_text(os.path.join(folder, entry)), [power], 1e-3))  # mW -> W
    return rails


def _candidates(sysfs_root: str):
    for folder in children(os.path.join(sysfs_root, "class", "hwmon"), "hwmon*"):
        yield "jetpack-hwmon", folder, "ina3221", _hwmon_rails
    seen = set()
    for pattern in (("bus", "iio", "devices", "iio:device*"), ("bus", "i2c", "drivers", "ina3221x", "*", "iio:device*")):
        for folder in children(sysfs_root, os.path.join(*pattern)):
            real = os.path.realpath(folder)
            if real not in seen:
                seen.add(real)
                yield "l4t-iio", folder, "ina3221x", _iio_rails


def find(sysfs_root: str) -> tuple[JetsonSource | None, str]:
    """The rails of every INA3221 of the first layout found (AGX Orin has two chips), or None."""
    by_layout: dict[str, list] = {}
    for layout, folder, chip, rails_of in _candidates(sysfs_root):
        try:
            if read_text(os.path.join(folder, "name")) == chip:
                by_layout.setdefault(layout, []).extend(rails_of(folder))
        except OSError:
            continue
    for layout, rails in by_layout.items():
        if rails:
            source = JetsonSource(layout, rails)
            try:
                source.read()  # present but unreadable counts as absent
            except (OSError, ValueError):
                continue
            return source, ""
    return None, f"no {LOOKED_FOR}"
