"""An estimate from a power model (idle and active watts, from the target profile). Never a measurement.

The result carries ``source: "estimated"`` and ``measured: false``: the figures follow from the model and the
measured run time only.
"""

from __future__ import annotations

from edgec.device_agent.power._sysfs import PowerSource
from edgec.errors import UsageError

__all__ = ["EstimatedSource", "parse_model"]


def parse_model(text: str) -> tuple[float, float]:
    """``"IDLE_W,ACTIVE_W"`` -> (idle, active). Raises UsageError."""
    parts = text.split(",")
    try:
        idle, active = (float(p) for p in parts)
    except ValueError:
        raise UsageError(f"--power-model {text!r}: expected IDLE_W,ACTIVE_W, e.g. 2.7,6.4") from None
    if idle < 0 or active < idle:
        raise UsageError(f"--power-model {text!r}: need 0 <= idle watts <= active watts")
    return idle, active


class EstimatedSource(PowerSource):
    name = "estimated"
    kind = "model"
    measured = False

    def __init__(self, idle_watts: float, active_watts: float):
        self.idle_watts = float(idle_watts)
        self.active_watts = float(active_watts)
        self.detail = {"model": {"idle_watts": self.idle_watts, "active_watts": self.active_watts},
                       "note": "estimated from the target profile's power model, not measured"}

    def read(self) -> float:
        return self.active_watts
