"""The host's side of the agent's command line: the argv for a benchmark and the parsing of its answer.

Used by ``edgec bench --device local`` (the agent zipapp run with this Python) and by remote runs over SSH,
which execute the same argv with the device's Python. Standard library only.
"""

from __future__ import annotations

import json

from edgec import errors
from edgec.device_agent.options import BenchOptions
from edgec.device_agent.schema import result_problem

__all__ = ["bench_argv", "check_result", "parse_output"]


def bench_argv(agent: str, bundle: str, options: BenchOptions, python: str = "python3") -> list[str]:
    """``[python, agent, "bench", bundle, ...]`` carrying every option that differs from the agent's default."""
    argv = [python, agent, "bench", bundle, "--runs", str(options.runs), "--warmup", str(options.warmup),
            "--power", options.power, "--sysfs-root", options.sysfs_root,
            "--power-interval", repr(options.power_interval_s), "--idle", repr(options.idle_s)]
    if options.threads is not None:
        argv += ["--threads", str(options.threads)]
    if options.duration_s is not None:
        argv += ["--duration", repr(options.duration_s)]
    if options.power_command:
        argv += ["--power-command", options.power_command]
    if options.power_model:
        argv += ["--power-model", f"{options.power_model[0]!r},{options.power_model[1]!r}"]
    return argv


def _error(doc: dict, where: str) -> errors.EdgecError:
    """The EdgecError the agent reported, re-raised here with the same class (and so the same exit code)."""
    cls = getattr(errors, str(doc.get("type")), None)
    message = f"{where}: {doc.get('message')}"
    if isinstance(cls, type) and issubclass(cls, errors.EdgecError):
        return cls(message)
    return errors.DeviceError(f"{where}: agent failed: {doc.get('type')}: {doc.get('message')}")


def check_result(doc: dict, where: str) -> dict:
    """``doc`` when it is a sound BenchResult document; DeviceError naming the first bad field otherwise."""
    problem = result_problem(doc)
    if problem is not None:
        raise errors.DeviceError(f"{where}: the agent's result is malformed ({problem}); the run is not counted")
    return doc


def parse_output(stdout: str, returncode: int, stderr: str = "", where: str = "agent") -> dict:
    """The agent's JSON document; raises the EdgecError it reported, or DeviceError when it said nothing usable."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        doc = json.loads(lines[-1]) if lines else None
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        raise _error(doc["error"], where)
    if returncode != 0 or not isinstance(doc, dict):
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        raise errors.DeviceError(f"{where}: the agent exited with code {returncode} without a result ({last})")
    return check_result(doc, where) if doc.get("kind") == "edgec.bench_result" else doc
