"""An external meter the user configures: a command run once per sample (USB power meters, lab supplies).

The command prints one of: a number (watts now); ``{"watts": W}``; ``{"joules": J}`` (a cumulative energy
counter). It runs without a shell (the string is split like a shell would) and must answer within
``TIMEOUT_S``. A failing command during the run marks the source lost.
"""

from __future__ import annotations

import json
import shlex
import subprocess

from edgec.device_agent.power._sysfs import PowerSource
from edgec.errors import UsageError

__all__ = ["CommandSource", "parse_reading"]

TIMEOUT_S = 5.0


def parse_reading(text: str) -> tuple[str, float]:
    """("power", watts) or ("energy", joules) from a meter command's output. Raises ValueError."""
    text = text.strip()
    try:
        return "power", float(text)
    except ValueError:
        pass
    data = json.loads(text)  # ValueError when neither a number nor JSON
    if isinstance(data, dict) and isinstance(data.get("watts"), (int, float)):
        return "power", float(data["watts"])
    if isinstance(data, dict) and isinstance(data.get("joules"), (int, float)):
        return "energy", float(data["joules"])
    raise ValueError(f"expected a number, {{\"watts\": W}} or {{\"joules\": J}}, got {text[:80]!r}")


class CommandSource(PowerSource):
    min_interval_s = 0.1  # a process per reading: keep the meter's own cost off the benchmark

    def __init__(self, command: str):
        self.argv = shlex.split(command)
        if not self.argv:
            raise UsageError("--power-command: empty command; give the meter command that prints watts")
        self.name = "command"
        self.detail = {"command": command}
        try:
            self.kind, _ = parse_reading(self._call())
        except (OSError, ValueError) as exc:
            raise UsageError(f"--power-command {command!r}: {exc}; it must print watts (a number) "
                             "or {\"watts\": W} or {\"joules\": J}") from None

    def _call(self) -> str:
        try:
            done = subprocess.run(self.argv, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise OSError(f"no answer within {TIMEOUT_S:g} s") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [""])[-1]
            raise OSError(f"exit code {done.returncode}: {last}")
        return done.stdout

    def read(self) -> float:
        kind, value = parse_reading(self._call())
        if kind != self.kind:
            raise ValueError(f"the command switched from {self.kind} to {kind} readings")
        return value
