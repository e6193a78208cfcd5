"""Latency statistics of a timed window (pure Python: the agent keeps its own dependencies to numpy)."""

from __future__ import annotations

import math

__all__ = ["MAX_SAMPLES", "latency_samples", "latency_stats", "percentile"]

# Per-inference latencies kept in the document (for distributions and regression tests on the host); a long
# --duration run keeps an evenly spaced subset, in time order, so the document stays small.
MAX_SAMPLES = 5000


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


def latency_samples(durations_ns: list[int], limit: int = MAX_SAMPLES) -> list[float]:
    """Per-inference latencies in ms, in time order, rounded to 1 ns; at most ``limit`` (evenly spaced)."""
    n = len(durations_ns)
    picked = durations_ns if n <= limit else [durations_ns[k * n // limit] for k in range(limit)]
    return [round(d / 1e6, 6) for d in picked]
