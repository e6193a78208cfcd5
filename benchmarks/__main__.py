"""Run every benchmark module's ``main()``: ``python -m benchmarks [AREA ...]`` (default: all of them)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback

import benchmarks


def areas() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    chosen = argv or areas()
    unknown = sorted(set(chosen) - set(areas()))
    if unknown:
        print(f"benchmarks: unknown {', '.join(unknown)}; known: {', '.join(areas())}", file=sys.stderr)
        return 2
    failed = []
    for area in chosen:
        module = importlib.import_module(f"benchmarks.{area}")
        if not hasattr(module, "main"):
            continue
        print(f"== benchmarks.{area}", flush=True)
        start = time.perf_counter()
        try:
            module.main()
        except Exception:  # one broken benchmark must not hide the others' tables
            traceback.print_exc()
            failed.append(area)
        print(f"== benchmarks.{area}: {time.perf_counter() - start:.1f} s\n", flush=True)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
