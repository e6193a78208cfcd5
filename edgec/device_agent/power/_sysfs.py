"""Reading numbers from sysfs-like files, and the base class of every power source.

A source is read in one of two ways, told by ``kind``:

- ``"power"``: ``read()`` returns the power now, in watts (INA2xx, INA3221, battery, most meter commands);
- ``"energy"``: ``read()`` returns joules accumulated since an arbitrary origin, never decreasing (RAPL: the
  source itself unwraps the hardware counter, so it must be read more often than the counter wraps);
- ``"model"``: no reading at all; figures come from a power model (``estimated``).

``read()`` raises ``OSError`` or ``ValueError`` when the sensor is gone or says nonsense; the meter then marks the
source lost and the benchmark goes on.
"""

from __future__ import annotations

import glob
import os

__all__ = ["PowerSource", "children", "read_number", "read_text"]


def read_text(path: str) -> str:
    with open(path) as handle:
        return handle.read().strip()


def read_number(path: str) -> float:
    """The number in a sysfs attribute file. Raises OSError if it is gone, ValueError if it is not a number."""
    text = read_text(path)
    try:
        return float(int(text))
    except ValueError:
        return float(text)  # raises ValueError with the text when it is not a number either


def children(root: str, pattern: str) -> list[str]:
    """Directories under ``root`` matching ``pattern``, sorted naturally (hwmon2 before hwmon10)."""
    found = [p for p in glob.glob(os.path.join(root, pattern)) if os.path.isdir(p)]

    def natural(path: str):
        name = os.path.basename(path)
        digits = "".join(c if c.isdigit() else " " for c in name).split()
        return (name.rstrip("0123456789:"), [int(d) for d in digits], name)

    return sorted(found, key=natural)


class PowerSource:
    """One way of measuring the device's power. Subclasses set the attributes and implement ``read``."""

    name = "none"  # reported as the result's power.source, e.g. "hwmon:ina219"
    kind = "power"  # "power" (watts now), "energy" (cumulative joules) or "model"
    measured = True
    min_interval_s = 0.0  # sources that run a tool per reading ask to be read less often
    detail: dict = {}

    def read(self) -> float:
        raise NotImplementedError

    def describe(self) -> dict:
        """What the result records about this source (paths, rails, notes)."""
        return dict(self.detail)
