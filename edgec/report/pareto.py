"""Pareto fronts: the variants no other variant beats on every objective at once."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["dominates", "pareto_front"]


def dominates(a: Sequence[float], b: Sequence[float], maximize: Sequence[bool]) -> bool:
    """``a`` is at least as good as ``b`` on every objective and strictly better on one."""
    better = False
    for x, y, up in zip(a, b, maximize):
        if (x < y) if up else (x > y):
            return False
        if x != y:
            better = True
    return better


def pareto_front(points: Sequence[Sequence[float | None]], maximize: Sequence[bool]) -> list[int]:
    """Indices (in input order) of the points on the Pareto front.

    Args:
        points: one tuple of objective values per candidate; a candidate with a missing (None) value cannot be
            compared and is never on the front.
        maximize: per objective, True when higher is better (accuracy), False when lower is (latency, size).

    Equal points do not dominate each other, so duplicates of a front point are all on the front.
    """
    complete = [k for k, p in enumerate(points) if len(p) == len(maximize) and all(v is not None for v in p)]
    return [k for k in complete
            if not any(dominates(points[j], points[k], maximize) for j in complete if j != k)]
