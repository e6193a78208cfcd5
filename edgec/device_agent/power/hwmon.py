"""INA219 / INA226 / INA260 ... current sensors on I2C, through the kernel's hwmon ``ina2xx`` driver.

Files (under ``SYSFS/class/hwmon/hwmonN/``): ``name`` (``ina219``, ``ina226``, ...), ``power1_input`` in
microwatts; when the driver gives no power, ``curr1_input`` (mA) times the bus voltage ``in1_input`` (mV).
A Raspberry Pi has no current sensor of its own: this is the usual external one.
"""

from __future__ import annotations

import os

from edgec.device_agent.power._sysfs import PowerSource, children, read_number, read_text

__all__ = ["INA2XX_NAMES", "HwmonSource", "find"]

INA2XX_NAMES = ("ina209", "ina219", "ina220", "ina226", "ina230", "ina231", "ina233", "ina238", "ina260")
LOOKED_FOR = "class/hwmon/hwmon*/name in ina2xx family with power1_input or curr1_input+in1_input"


class HwmonSource(PowerSource):
    kind = "power"

    def __init__(self, folder: str, chip: str):
        self.name = f"hwmon:{chip}"
        self._power = os.path.join(folder, "power1_input")
        self._curr = os.path.join(folder, "curr1_input")
        self._volt = os.path.join(folder, "in1_input")
        self.use_power = os.path.exists(self._power)
        files = [self._power] if self.use_power else [self._curr, self._volt]
        self.detail = {"path": folder, "chip": chip, "files": [os.path.basename(f) for f in files]}

    def read(self) -> float:
        if self.use_power:
            return read_number(self._power) / 1e6
        return read_number(self._curr) * read_number(self._volt) / 1e6


def find(sysfs_root: str) -> tuple[HwmonSource | None, str]:
    """The first ina2xx hwmon device that exposes power or current and voltage, or None."""
    for folder in children(os.path.join(sysfs_root, "class", "hwmon"), "hwmon*"):
        try:
            chip = read_text(os.path.join(folder, "name"))
            if chip in INA2XX_NAMES:
                source = HwmonSource(folder, chip)
                source.read()  # present but unreadable counts as absent
                return source, ""
        except (OSError, ValueError):
            continue
    return None, f"no {LOOKED_FOR}"
