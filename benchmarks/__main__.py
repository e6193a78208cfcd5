"""Run the benchmarks: ``python -m benchmarks [--no-goals] [AREA ...]`` (default: all of them).

Each module's ``main(argv)`` measures on this machine (target profile ``host``) and returns its goals; the exit
status is 1 when a goal is not met or a benchmark failed or stated no goal (``--no-goals``: print only, exit 0
unless a benchmark failed). Modules never see the harness's own arguments.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback

import benchmarks
from benchmarks._goals import machine, print_goals


def areas() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if not m.name.startswith("_"))


def run_area(area: str) -> tuple[list[dict], str | None]:
    """(goals, problem): problem is why the area counts as failed (it raised, or stated no goal)."""
    module = importlib.import_module(f"benchmarks.{area}")
    print(f"== benchmarks.{area}", flush=True)
    start = time.perf_counter()
    try:
        result = module.main([]) or {}
    except Exception:  # one broken benchmark must not hide the others' tables
        traceback.print_exc()
        return [], "raised"
    finally:
        print(f"== benchmarks.{area}: {time.perf_counter() - start:.1f} s\n", flush=True)
    if result.get("skipped"):
        print(f"benchmarks.{area}: skipped: {result['skipped']}")
        return [], None
    goals = result.get("goals") or []
    return goals, None if goals else "stated no goal"


def main(argv: list[str]) -> int:
    enforce = "--no-goals" not in argv
    chosen = [a for a in argv if a != "--no-goals"] or areas()
    unknown = sorted(set(chosen) - set(areas()))
    if unknown:
        print(f"benchmarks: unknown {', '.join(unknown)}; known: {', '.join(areas())}", file=sys.stderr)
        return 2
    print(machine(), flush=True)
    problems, missed = [], []
    for area in chosen:
        goals, problem = run_area(area)
        if problem:
            problems.append(f"{area} ({problem})")
        missed += [f"{area}: {g['goal']} ({g['figure']})" for g in goals if not g["met"]]
        print_goals([{**g, "goal": f"{area}: {g['goal']}"} for g in goals])
    if problems:
        print(f"benchmarks failed: {', '.join(problems)}", file=sys.stderr)
    if missed:
        print("goals not met:\n  " + "\n  ".join(missed), file=sys.stderr)
    return 1 if problems or (missed and enforce) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
