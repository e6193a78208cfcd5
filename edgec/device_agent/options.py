"""Benchmark options, validated once (the CLI, ``serve`` requests and the Python API all build one)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from edgec.errors import UsageError

__all__ = ["BenchOptions"]


def _int(name: str, value, minimum: int):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"--{name} {value!r}: expected a whole number >= {minimum}")
    if value < minimum:
        raise UsageError(f"--{name} {value}: must be >= {minimum}")
    return value


def _float(name: str, value, minimum: float, inclusive: bool):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
        raise UsageError(f"--{name} {value!r}: expected a number")
    if value < minimum or (value == minimum and not inclusive):
        raise UsageError(f"--{name} {value}: must be {'>=' if inclusive else '>'} {minimum:g}")
    return float(value)


@dataclass(frozen=True)
class BenchOptions:
    """How to benchmark. ``duration_s``, when given, times runs for that long instead of ``runs`` runs.

    ``power_model`` is ``(idle_watts, active_watts)`` from the target profile, for the ``estimated`` source.
    ``idle_s`` is how long idle power is sampled before the timed window (0 skips it).
    """

    runs: int = 200
    warmup: int = 20
    threads: int | None = None
    duration_s: float | None = None
    power: str = "auto"
    power_command: str | None = None
    power_model: tuple | None = None
    sysfs_root: str = "/sys"
    power_interval_s: float = 0.02
    idle_s: float = 1.0

    def __post_init__(self):
        _int("runs", self.runs, 1)
        _int("warmup", self.warmup, 0)
        _int("threads", self.threads, 1)
        _float("duration", self.duration_s, 0.0, inclusive=False)
        _float("power-interval", self.power_interval_s, 0.001, inclusive=True)
        _float("idle", self.idle_s, 0.0, inclusive=True)
        if not isinstance(self.power, str) or not self.power.strip():
            raise UsageError(f"--power {self.power!r}: expected a source name such as auto, none, hwmon, rapl")
        if not isinstance(self.sysfs_root, str) or "\0" in self.sysfs_root:
            raise UsageError(f"--sysfs-root {self.sysfs_root!r}: expected a directory path")
        if self.power_command is not None and (not isinstance(self.power_command, str) or "\0" in self.power_command):
            raise UsageError(f"--power-command {self.power_command!r}: expected a command line")
        if self.power_model is not None:
            if not isinstance(self.power_model, (list, tuple)):
                raise UsageError(f"--power-model {self.power_model!r}: expected IDLE_W,ACTIVE_W")
            model = tuple(self.power_model)
            if len(model) != 2 or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in model) or model[1] < model[0]:
                raise UsageError(f"--power-model {self.power_model!r}: expected IDLE_W,ACTIVE_W with 0 <= idle <= active")
            object.__setattr__(self, "power_model", (float(model[0]), float(model[1])))

    @classmethod
    def from_any(cls, options) -> BenchOptions:
        """From None (defaults), a BenchOptions, or a dict of its fields (``serve`` requests, JSON)."""
        if options is None:
            return cls()
        if isinstance(options, cls):
            return options
        if not isinstance(options, dict):
            raise UsageError(f"bench options: expected a mapping, got {type(options).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UsageError(f"bench options: unknown {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**options)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
