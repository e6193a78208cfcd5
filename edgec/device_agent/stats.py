"""Latency statistics of a timed window (pure Python: the agent keeps its own dependencies to numpy)."""

from __future__ import annotations

import math

__all__ = ["latency_stats", "percentile"]


def percentile(ordered: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of sorted values, linear between closest ranks (numpy's default)."""
    if not ordered:
        raise ValueError("percentile of no values")
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def latency_stats(durations_ns: list[int]) -> dict:
    """count, min, p50, p90, p99, max, mean and sample stdev, in milliseconds."""
    ms = sorted(d / 1e6 for d in durations_ns)
    n = len(ms)
    mean = sum(ms) / n
    var = sum((x - mean) ** 2 for x in ms) / (n - 1) if n > 1 else 0.0
    return {
        "count": n,
        "min": ms[0],
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "max": ms[-1],
        "mean": mean,
        "stdev": math.sqrt(var),
    }
