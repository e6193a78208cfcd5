"""Power sources, chosen by name: what the device has (``auto``), or what the user or the profile says.

Names: ``jetson`` (INA3221 rails), ``hwmon`` (INA2xx), ``pmic`` (Raspberry Pi 5 ``vcgencmd pmic_read_adc``),
``rapl`` (x86 energy counters), ``battery``
(power_supply), ``command`` (an external meter, ``--power-command``), ``estimated`` (the profile's power model,
``--power-model IDLE_W,ACTIVE_W``, never labelled measured) and ``none``. A comma list tries names in order.
``auto`` tries the sensors in ``AUTO_ORDER``, then the command when one is given, and otherwise reports ``none``
with what it looked for; it never falls back to an estimate (ask for ``estimated`` by name, or list it last:
``hwmon,estimated``), so a figure is only ever labelled measured or plainly estimated. A named source (or list)
of which nothing is there is an error.

Every sysfs path is relative to a configurable root (``/sys`` on a device, a fake tree in tests).
"""

from __future__ import annotations

from edgec.device_agent.power import battery, hwmon, jetson, pmic, rapl
from edgec.device_agent.power._sysfs import PowerSource
from edgec.device_agent.power.command import CommandSource
from edgec.device_agent.power.estimated import EstimatedSource, parse_model
from edgec.device_agent.power.meter import PowerMeter
from edgec.errors import UsageError

__all__ = ["AUTO_ORDER", "NAMES", "SENSORS", "PowerMeter", "PowerSource", "none_summary", "parse_model",
           "select_source"]

SENSORS = {"jetson": jetson.find, "hwmon": hwmon.find, "pmic": pmic.find, "rapl": rapl.find, "battery": battery.find}
# A sensor on the power input (INA2xx, INA3221's VDD_IN) before the Pi 5's PMIC rails, which miss USB and losses.
AUTO_ORDER = ("jetson", "hwmon", "pmic", "rapl", "battery")
NAMES = ("auto", "none", *SENSORS, "command", "estimated")


def _one(name: str, sysfs_root: str, command: str | None, model: tuple | None) -> tuple[PowerSource | None, str]:
    if name in SENSORS:
        return SENSORS[name](sysfs_root)
    if name == "command":
        if not command:
            return None, "command: no --power-command given"
        return CommandSource(command), ""
    if name == "estimated":
        if model is None:
            return None, "estimated: no --power-model IDLE_W,ACTIVE_W given"
        return EstimatedSource(*model), ""
    raise UsageError(f"--power {name!r}: unknown source; choose from {', '.join(NAMES)} (or a comma list)")


def select_source(spec: str, sysfs_root: str = "/sys", command: str | None = None,
                  model: tuple | None = None) -> tuple[PowerSource | None, list[str]]:
    """(source, reasons for every name tried and not found). ``None`` means no power figures (``none``)."""
    spec = (spec or "auto").strip()
    if spec == "none":
        return None, ["--power none"]
    names = [n.strip() for n in spec.split(",") if n.strip()]
    auto = names == ["auto"]
    if auto:
        names = [*AUTO_ORDER, *(["command"] if command else [])]
    reasons = []
    for name in names:
        if name in ("auto", "none"):
            raise UsageError(f"--power {spec!r}: {name!r} cannot be part of a list")
        source, why = _one(name, sysfs_root, command, model)
        if source is not None:
            return source, reasons
        reasons.append(why)
    if not auto:
        raise UsageError(f"--power {spec}: not found under {sysfs_root} ({'; '.join(reasons)}); "
                         "use --power auto or --power none")
    return None, reasons


def none_summary(reasons: list[str], sysfs_root: str) -> dict:
    """The ``power`` section when there is no source: says so plainly, with no figures."""
    why = "; ".join(reasons) if reasons else "no source"
    return {"source": "none", "measured": False, "kind": None, "status": "none",
            "reason": f"no power source: {why} (sysfs root {sysfs_root})", "detail": {},
            "idle_watts": None, "active_watts": None, "energy_window_j": None, "energy_per_inference_j": None,
            "idle_s": None, "window_s": None, "samples": None, "sampling_hz": None, "note": None}
