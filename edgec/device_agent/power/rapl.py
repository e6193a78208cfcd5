"""Intel/AMD RAPL energy counters: ``SYSFS/class/powercap/intel-rapl:N/energy_uj``.

The counter is in microjoules and wraps to 0 after ``max_energy_range_uj``; this source unwraps it, so the
meter must read it more often than it wraps (at tens of watts that is minutes, the meter reads many times a
second). Top-level domains only (``intel-rapl:N``, not ``intel-rapl:N:M`` sub-domains which the package
already contains); when a ``psys`` (whole platform) domain exists it alone is read, otherwise the ``package-*``
domains are summed. Since Linux 5.10 ``energy_uj`` is readable by root only.
"""

from __future__ import annotations

import os
import re

from edgec.device_agent.power._sysfs import PowerSource, children, read_number, read_text

__all__ = ["RaplSource", "find", "unwrap_delta"]

LOOKED_FOR = "class/powercap/intel-rapl:N/energy_uj"


def unwrap_delta(previous: float, now: float, max_range: float) -> float:
    """Counter increase from ``previous`` to ``now``; a smaller ``now`` means it wrapped once past ``max_range``."""
    if now >= previous:
        return now - previous
    return (max_range - previous) + now


class RaplSource(PowerSource):
    kind = "energy"

    def __init__(self, domains: list[tuple[str, str, float]]):
        # domains: (name, energy_uj path, max_energy_range_uj)
        self.name = "rapl"
        self.domains = domains
        self._last = [read_number(path) for _, path, _ in domains]
        self._joules = 0.0
        self.detail = {"domains": [d[0] for d in domains], "files": [d[1] for d in domains],
                       "max_energy_range_uj": [d[2] for d in domains]}

    def read(self) -> float:
        """Joules since this source was made, unwrapped."""
        for i, (_, path, max_range) in enumerate(self.domains):
            now = read_number(path)
            self._joules += unwrap_delta(self._last[i], now, max_range) / 1e6
            self._last[i] = now
        return self._joules


def _domains(sysfs_root: str) -> list[tuple[str, str, float]]:
    found = []
    for folder in children(os.path.join(sysfs_root, "class", "powercap"), "intel-rapl:*"):
        if not re.fullmatch(r"intel-rapl:\d+", os.path.basename(folder)):
            continue
        try:
            name = read_text(os.path.join(folder, "name"))
            max_range = read_number(os.path.join(folder, "max_energy_range_uj"))
        except (OSError, ValueError):
            continue
        found.append((name, os.path.join(folder, "energy_uj"), max_range))
    psys = [d for d in found if d[0] == "psys"]
    return psys or [d for d in found if d[0].startswith("package")] or found


def find(sysfs_root: str) -> tuple[RaplSource | None, str]:
    """(source, "") or (None, why not)."""
    domains = _domains(sysfs_root)
    if not domains:
        return None, f"no {LOOKED_FOR}"
    try:
        return RaplSource(domains), ""
    except PermissionError:
        return None, (f"{domains[0][1]} is readable by root only (Linux >= 5.10): run the agent as root "
                      "or make the file readable")
    except (OSError, ValueError) as exc:
        return None, f"{domains[0][1]}: unreadable ({exc})"
