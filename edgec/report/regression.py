"""Is a run slower than the previous run of the same bundle on the same device, beyond the runs' own noise?

The statistic (documented in the report's "Method" section):

* the change is the difference of the two runs' median latencies, relative to the earlier run's median;
* the noise is a 95% percentile-bootstrap confidence interval of that difference, resampling each run's own
  per-inference latencies (``latency_samples_ms``) independently, 1000 times, with a fixed seed so the same
  database gives the same report;
* a run is a **regression** when the interval lies entirely above zero (slower beyond the noise measured in
  the runs) *and* the median grew by at least ``MIN_CHANGE`` (5%): two runs of one bundle also differ by
  things the within-run spread does not see (temperature, background load), so a tiny but "significant" shift
  on a very steady device is reported as ``below threshold``, not flagged. Symmetrically for an improvement.
* when the bundle has at least ``MIN_HISTORY`` earlier runs on the device, their run-to-run spread is
  measured too: the threshold becomes the larger of ``MIN_CHANGE`` and twice the standard deviation of the
  relative change between consecutive earlier medians (a busy or thermally unstable device must move further
  before a run counts as a regression).
* runs stored without per-inference latencies (older agents) fall back to a normal approximation: the spread
  is estimated from the percentiles, sigma ~ (p90 - p50) / 1.2816, the standard error of a median
  ~ 1.2533 sigma / sqrt(n), and the interval is diff +- 1.96 sqrt(se1^2 + se2^2).

Medians rather than means: latency distributions have long right tails (scheduler, page faults), and one
stall moves a mean but not a median.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["CONFIDENCE", "MIN_CHANGE", "MIN_HISTORY", "RESAMPLES", "LatencyChange", "compare_latency",
           "history_threshold", "samples_of"]

CONFIDENCE = 0.95
MIN_CHANGE = 0.05
MIN_HISTORY = 3
RESAMPLES = 1000
_Z95 = 1.959964


@dataclass(frozen=True)
class LatencyChange:
    """The later run against the earlier one; ``change`` and the interval are fractions of the base median."""

    base_median_ms: float
    new_median_ms: float
    change: float
    ci_low: float
    ci_high: float
    verdict: str  # regression | improvement | within noise | below threshold
    method: str  # bootstrap | normal approximation
    threshold: float = MIN_CHANGE  # smallest relative change flagged (MIN_CHANGE or the run-to-run spread)

    @property
    def flagged(self) -> bool:
        return self.verdict == "regression"


def samples_of(result: dict) -> np.ndarray | None:
    """The per-inference latencies (ms) of a BenchResult document, or None when it has none."""
    values = result.get("latency_samples_ms")
    if not values:
        return None
    return np.asarray(values, dtype=np.float64)


def _bootstrap(base: np.ndarray, new: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    chunk = max(1, 400_000 // max(base.size, new.size))  # resamples per block: a few MB at most
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        diffs[start:start + rows] = (np.median(rng.choice(new, size=(rows, new.size)), axis=1)
                                     - np.median(rng.choice(base, size=(rows, base.size)), axis=1))
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return float(low), float(high)


def _median_se(stats: dict) -> float:
    n = max(int(stats.get("count") or 1), 1)
    spread = (stats["p90"] - stats["p50"]) / 1.2816 if stats.get("p90", 0) > stats.get("p50", 0) else 0.0
    sigma = spread or float(stats.get("stdev") or 0.0)
    return 1.2533 * sigma / math.sqrt(n)


def _verdict(change: float, low: float, high: float, min_change: float) -> str:
    if low > 0:
        return "regression" if change >= min_change else "below threshold"
    if high < 0:
        return "improvement" if change <= -min_change else "below threshold"
    return "within noise"


def history_threshold(medians: list[float], min_change: float = MIN_CHANGE) -> float:
    """The flagging threshold given the medians (ms, oldest first) of the runs before the latest one."""
    if len(medians) < MIN_HISTORY:
        return min_change
    values = np.asarray(medians, dtype=np.float64)
    steps = np.diff(values) / np.where(values[:-1] > 0, values[:-1], 1.0)
    return max(min_change, 2.0 * float(np.std(steps, ddof=1)))


def compare_latency(base: dict, new: dict, min_change: float = MIN_CHANGE, resamples: int = RESAMPLES,
                    seed: int = 0) -> LatencyChange:
    """Compare two BenchResult documents of the same bundle on the same device (``new`` ran later).

    ``min_change``: the smallest relative change flagged (see ``history_threshold``)."""
    a, b = samples_of(base), samples_of(new)
    if a is not None and b is not None:
        base_median, new_median = float(np.median(a)), float(np.median(b))
        low, high = _bootstrap(a, b, resamples, seed)
        method = "bootstrap"
    else:
        sa, sb = base["latency_ms"], new["latency_ms"]
        base_median, new_median = float(sa["p50"]), float(sb["p50"])
        half = _Z95 * math.hypot(_median_se(sa), _median_se(sb))
        low, high = new_median - base_median - half, new_median - base_median + half
        method = "normal approximation"
    scale = base_median if base_median > 0 else 1.0
    change = (new_median - base_median) / scale
    return LatencyChange(base_median, new_median, change, low / scale, high / scale,
                         _verdict(change, low, high, min_change), method, min_change)
