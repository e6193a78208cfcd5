"""The conditions a benchmark ran under: CPU, frequency and governor, temperatures, throttling, OS, Python.

Everything is best effort: what a device does not expose is ``None``, never a guess. Paths under ``/sys`` are
relative to the configurable sysfs root, like the power sensors.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

from edgec.device_agent.power._sysfs import children, read_number, read_text

__all__ = ["cpu_info", "decode_throttled", "snapshot", "static_conditions"]

# ARM "CPU part" numbers (implementer 0x41) of the cores found on edge boards.
ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
    "0xd42": "Cortex-A78AE", "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710",
    "0xd4b": "Cortex-A78C", "0xd4f": "Neoverse-V2",
}
# Bits of `vcgencmd get_throttled` (Raspberry Pi firmware).
THROTTLE_BITS = {
    0: "under_voltage", 1: "arm_frequency_capped", 2: "throttled", 3: "soft_temperature_limit",
    16: "under_voltage_occurred", 17: "arm_frequency_capped_occurred", 18: "throttled_occurred",
    19: "soft_temperature_limit_occurred",
}


def _cpuinfo() -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, sep, value = line.partition(":")
                if sep and key.strip() not in fields:
                    fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_info() -> dict:
    """Model, architecture, core count and the cores this process may use."""
    fields = _cpuinfo()
    model = fields.get("model name") or fields.get("Model") or fields.get("Hardware")
    part = fields.get("CPU part", "").lower()
    if not model and part in ARM_PARTS:
        model = ARM_PARTS[part]
    elif part in ARM_PARTS and ARM_PARTS[part] not in (model or ""):
        model = f"{model} ({ARM_PARTS[part]})"
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"model": model or platform.processor() or None, "arch": platform.machine(),
            "cores": os.cpu_count(), "cores_usable": usable}


def _frequencies(sysfs_root: str) -> dict:
    base = os.path.join(sysfs_root, "devices", "system", "cpu")
    governors, cur = set(), []
    max_mhz = None
    for folder in children(base, "cpu[0-9]*"):
        freq = os.path.join(folder, "cpufreq")
        try:
            governors.add(read_text(os.path.join(freq, "scaling_governor")))
            cur.append(read_number(os.path.join(freq, "scaling_cur_freq")) / 1000.0)
            max_mhz = max(max_mhz or 0.0, read_number(os.path.join(freq, "scaling_max_freq")) / 1000.0)
        except (OSError, ValueError):
            continue
    return {"governor": ",".join(sorted(governors)) or None, "freq_mhz": cur or None, "max_freq_mhz": max_mhz}


def _temperatures(sysfs_root: str) -> dict:
    temps = {}
    for folder in children(os.path.join(sysfs_root, "class", "thermal"), "thermal_zone*"):
        try:
            kind = read_text(os.path.join(folder, "type"))
            temps[f"{os.path.basename(folder)}:{kind}"] = read_number(os.path.join(folder, "temp")) / 1000.0
        except (OSError, ValueError):
            continue
    return temps


def decode_throttled(text: str) -> dict:
    """``throttled=0x50005`` -> {"raw": "0x50005", "flags": [...]}."""
    raw = text.strip().partition("=")[2] or text.strip()
    value = int(raw, 16)
    return {"raw": raw, "flags": [name for bit, name in sorted(THROTTLE_BITS.items()) if value >> bit & 1]}


def _throttled() -> dict | None:
    tool = shutil.which("vcgencmd")
    if not tool:
        return None
    try:
        done = subprocess.run([tool, "get_throttled"], capture_output=True, text=True, timeout=2)
        return decode_throttled(done.stdout) if done.returncode == 0 else {"error": done.stderr.strip()[:200]}
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc)[:200]}


def snapshot(sysfs_root: str = "/sys") -> dict:
    """What changes during a run: frequencies, temperatures (C), throttling flags, load average."""
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {**_frequencies(sysfs_root), "temperatures_c": _temperatures(sysfs_root),
            "throttled": _throttled(), "loadavg": load}


def _os_release() -> str | None:
    try:
        for line in read_text("/etc/os-release").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.partition("=")[2].strip('"')
    except OSError:
        pass
    return None


def static_conditions() -> dict:
    """What does not change during a run: CPU, OS, Python, numpy."""
    try:
        import numpy

        numpy_version = numpy.__version__
    except ImportError:
        numpy_version = None
    return {"cpu": cpu_info(),
            "os": {"system": platform.system(), "release": platform.release(), "distribution": _os_release(),
                   "hostname": platform.node()},
            "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                       "executable": sys.executable},
            "numpy": numpy_version}
