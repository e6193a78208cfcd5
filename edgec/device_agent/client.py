"""The host's side of the agent: the ``AgentRunner`` protocol, the argv for a benchmark and the parsing of answers.

``AgentRunner`` is what every caller that needs the agent (bench, farm, sweep, demo, targets calibrate) talks
to; ``edgec.deploy.agent`` implements it for this machine (``LocalAgent``) and for an SSH device (``SshAgent``),
as labgrid splits a protocol from its drivers. It lives here, beside the agent's wire format and below every
layer that uses it, so ``edgec.targets`` can be handed a runner without importing ``edgec.deploy``. Standard
library only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable

from edgec import errors
from edgec.device_agent.options import BenchOptions
from edgec.device_agent.schema import result_problem

__all__ = ["AgentRunner", "bench_argv", "check_result", "parse_output", "parse_serve", "serve_input"]


@runtime_checkable
class AgentRunner(Protocol):
    """The device agent on one device, open for the length of a ``with`` block.

    ``name``/``address``/``target`` say which device (``target``: its profile name, or None when unknown).
    ``place`` makes a bundle available to the agent (a local path, or pushed to the device's store) and returns
    the path the agent sees; ``bench`` measures a placed bundle (``fresh``: in a process of its own, so peak
    memory is the bundle's alone); ``serve`` answers a batch of requests in one agent process, one document
    (result or ``{"error": ...}``) per request.
    """

    name: str
    address: str | None
    target: str | None

    def __enter__(self) -> AgentRunner: ...

    def __exit__(self, *exc) -> None: ...

    def info(self) -> dict: ...

    def place(self, bundle: Path) -> str: ...

    def bench(self, placed: str, options: BenchOptions, fresh: bool = False) -> dict: ...

    def serve(self, requests: list[dict]) -> list[dict]: ...


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


def serve_input(requests: list[dict]) -> str:
    """The ``serve`` command's stdin for a batch: one JSON line per request (``id`` = its index), then ``quit``."""
    lines = [json.dumps({**request, "id": i}) for i, request in enumerate(requests)]
    lines.append(json.dumps({"id": len(requests), "op": "quit"}))
    return "\n".join(lines) + "\n"


def parse_serve(stdout: str, count: int, where: str) -> list[dict]:
    """One document per request id: the result, or ``{"error": {...}}`` for a request the agent refused.

    Raises DeviceError when the session ended before answering every request.
    """
    answers: dict = {}
    for line in stdout.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("id"), int):
            answers[doc["id"]] = (doc.get("result") or {}) if doc.get("ok") else {"error": doc.get("error") or {}}
    missing = [i for i in range(count) if i not in answers]
    if missing:
        raise errors.DeviceError(f"{where}: the agent's serve session ended after {count - len(missing)} of "
                                 f"{count} requests (crashed or killed?); rerun with --quick or check the device")
    return [answers[i] for i in range(count)]
