"""Raspberry Pi 5 PMIC rail readings: ``vcgencmd pmic_read_adc``.

The firmware reports each rail's current (``NAME_A current(N)=0.0039A``) and voltage (``NAME_V volt(N)=3.7V``);
the source sums current x voltage over the rails that have both. That is the board's rails after the PMIC, not
the 5 V input: USB devices and conversion losses are not in it (the result says so). Each reading runs the
tool, so the meter reads it at most ``min_interval_s`` often to keep its own cost off the benchmark.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from edgec.device_agent.power._sysfs import PowerSource

__all__ = ["PmicSource", "find", "parse_pmic"]

LOOKED_FOR = "`vcgencmd pmic_read_adc` (Raspberry Pi 5)"
_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)=([0-9.eE+-]+)[AV]\s*$")


def parse_pmic(text: str) -> dict[str, float]:
    """Rail -> watts from ``pmic_read_adc`` output; raises ValueError when no rail has both A and V."""
    amps, volts = {}, {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            (amps if match.group(2) == "A" else volts)[match.group(1)] = float(match.group(3))
    rails = {name: amps[name] * volts[name] for name in sorted(amps) if name in volts}
    if not rails:
        raise ValueError(f"no rail with both current and voltage in pmic_read_adc output: {text[:80]!r}")
    return rails


class PmicSource(PowerSource):
    kind = "power"
    min_interval_s = 0.2

    def __init__(self, tool: str):
        self.argv = [tool, "pmic_read_adc"]
        self.name = "pmic:rpi5"
        rails = parse_pmic(self._call())
        self.detail = {"tool": tool, "rails": sorted(rails),
                       "note": "sum of the PMIC's output rails: excludes USB peripherals and 5 V input losses"}

    def _call(self) -> str:
        try:
            done = subprocess.run(self.argv, capture_output=True, text=True, timeout=5)
        except subprocess.TimeoutExpired:
            raise OSError("vcgencmd pmic_read_adc: no answer within 5 s") from None
        if done.returncode != 0:
            raise OSError(f"vcgencmd pmic_read_adc: exit code {done.returncode}: {done.stderr.strip()[:200]}")
        return done.stdout

    def read(self) -> float:
        return sum(parse_pmic(self._call()).values())


def find(sysfs_root: str) -> tuple[PmicSource | None, str]:
    """The PMIC source when ``vcgencmd`` exists and answers ``pmic_read_adc`` (older Pis do not)."""
    tool = shutil.which("vcgencmd")
    if not tool:
        return None, f"no {LOOKED_FOR}"
    try:
        return PmicSource(tool), ""
    except (OSError, ValueError) as exc:
        return None, f"{LOOKED_FOR} unusable: {exc}"
