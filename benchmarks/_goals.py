"""What a benchmark hands the harness: its goals, each with the figure that decided it, and the machine it ran on.

Every benchmark's ``main(argv)`` returns a dict with ``goals``: a list of ``goal(...)`` records (or ``skipped``:
the reason it could not run here). ``python -m benchmarks`` exits non-zero when a goal is not met.
"""

from __future__ import annotations

import os

__all__ = ["goal", "machine", "print_goals"]


def goal(name: str, met: bool, figure: str) -> dict:
    """One stated goal (``name`` says the target, e.g. "agent p50 within 3% of a bare loop") and its outcome."""
    return {"goal": name, "met": bool(met), "figure": figure}


def print_goals(goals: list[dict]) -> None:
    for record in goals:
        print(f"goal: {record['goal']}: {'met' if record['met'] else 'NOT met'} ({record['figure']})")


def machine() -> str:
    """The machine the figures come from: CPU model, cores, the ISA features edgec's ``host`` profile sees."""
    from edgec.targets import load_profile

    host = load_profile("host")
    return (f"machine: {host.cpu.model}, {len(os.sched_getaffinity(0))} cores usable, {host.cpu.arch}, "
            f"ISA features {' '.join(host.cpu.isa_features) or 'none'}; target profile host (extends {host.base})")
