"""A battery's discharge power: ``SYSFS/class/power_supply/NAME/`` with ``type`` = ``Battery``.

``power_now`` in microwatts, or ``current_now`` (uA) times ``voltage_now`` (uV). This is the whole system's draw
only while the battery discharges (mains unplugged); otherwise the result says so in ``note``.
"""

from __future__ import annotations

import os

from edgec.device_agent.power._sysfs import PowerSource, children, read_number, read_text

__all__ = ["BatterySource", "find"]

LOOKED_FOR = "class/power_supply/*/type == Battery with power_now or current_now+voltage_now"


class BatterySource(PowerSource):
    kind = "power"

    def __init__(self, folder: str):
        self.name = f"battery:{os.path.basename(folder)}"
        self._power = os.path.join(folder, "power_now")
        self._curr = os.path.join(folder, "current_now")
        self._volt = os.path.join(folder, "voltage_now")
        self.use_power = os.path.exists(self._power)
        try:
            status = read_text(os.path.join(folder, "status"))
        except OSError:
            status = "unknown"
        self.detail = {"path": folder, "status": status}
        if status != "Discharging":
            self.detail["note"] = (f"battery status is {status!r}, not 'Discharging': the figure is the battery's "
                                   "flow, not the system's draw; unplug mains power for a system measurement")

    def read(self) -> float:
        if self.use_power:
            return abs(read_number(self._power)) / 1e6
        return abs(read_number(self._curr) * read_number(self._volt)) / 1e12


def find(sysfs_root: str) -> tuple[BatterySource | None, str]:
    for folder in children(os.path.join(sysfs_root, "class", "power_supply"), "*"):
        try:
            if read_text(os.path.join(folder, "type")) != "Battery":
                continue
            source = BatterySource(folder)
            source.read()
        except (OSError, ValueError):
            continue
        return source, ""
    return None, f"no {LOOKED_FOR}"
