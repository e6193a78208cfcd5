"""What the accuracy measure can and cannot tell: confidence intervals, the verdict on a budget, samples needed.

A score measured on a few dozen samples is an estimate. The guard acts on evidence:

* **holds**: the whole 95% interval of the drop is within ``--max-accuracy-drop``;
* **exceeds**: the whole interval is above it (only then may the compile be refused);
* **undecided**: the interval contains the budget. The guard then says how many samples would decide it and
  goes by the point estimate of a continuous measure, and never refuses on it.

Measures (all in points, 0..100, see ``edgec.compiler.accuracy``):

* with labels: the top-1 accuracy drop (paired bootstrap interval over the samples);
* a classifier without labels: *flips* (top-1 disagreement with float, Wilson interval), and the *expected
  accuracy drop* under the float model's own softmax: a flip between two near-tied classes costs almost nothing, a
  flip of a confident decision costs its probability (bootstrap interval). The budget bounds an accuracy drop, so
  the expected drop decides: flips are evidence only that it cannot be larger. A binary model's near-ties and a
  1000-class net's low-confidence crops are thus judged by the same rule, not by a fixed flip count;
* any other output: 100 x (1 - cosine similarity) with float (bootstrap interval).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["Z", "bootstrap_interval", "decide", "samples_to_decide", "wilson"]

Z = 1.96  # 95% two-sided
BOOTSTRAP_ROUNDS = 2000


def wilson(successes: int, n: int, z: float = Z) -> tuple[float, float]:
    """Wilson score interval of a proportion (0..1)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of ``values`` (seeded: the same data give the same bounds)."""
    values = np.asarray(values, np.float64)
    if len(values) == 0:
        return 0.0, 0.0
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    means = np.empty(BOOTSTRAP_ROUNDS)
    for start in range(0, BOOTSTRAP_ROUNDS, 250):  # bounded memory for large sets
        picks = rng.integers(0, len(values), (min(250, BOOTSTRAP_ROUNDS - start), len(values)))
        means[start:start + len(picks)] = values[picks].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def samples_to_decide(rate: float, budget: float, have: int, limit: int = 1_000_000) -> int | None:
    """Samples a flip rate ``rate`` (0..1) would need for its Wilson interval to exclude ``budget`` (0..1)."""
    if abs(rate - budget) < 1e-9:
        return None

    def decides(n: int) -> bool:
        low, high = wilson(round(rate * n), n)
        return high <= budget or low > budget

    n = max(have, 2)
    while not decides(n):
        n *= 2
        if n > limit:
            return None
    low = n // 2
    while low + 1 < n:  # bisect the smallest n that decides
        mid = (low + n) // 2
        low, n = (low, mid) if decides(mid) else (mid, n)
    return n


def _verdict(low: float, high: float, budget: float) -> str:
    return "holds" if high <= budget else "exceeds" if low > budget else "undecided"


def _needed(name: str, measured: dict, estimate: float, interval, budget: float) -> int | None:
    """Samples that would shrink the interval to exclude the budget: Wilson for flips, else the interval's
    half-width scaled by 1/sqrt(n)."""
    n = measured["samples"]
    if name == "top-1 flips":
        return samples_to_decide((100.0 - measured["agreement"]) / 100, budget / 100, n)
    gap = abs(estimate - budget)
    half = (interval[1] - interval[0]) / 2
    return None if gap < 1e-9 else max(n + 1, math.ceil(n * (half / gap) ** 2))


def decide(measured: dict, budget: float) -> dict:
    """The verdict of ``measured`` (``Evaluator.measure``) on ``budget`` points, with the evidence behind it.

    Returns ``verdict`` (holds, exceeds, undecided), ``accept`` (what the guard does: True when the evidence or, if
    undecided, the continuous estimate says the budget holds), ``measure``, ``estimate``, ``interval``, ``needed``
    (samples that would decide an undecided verdict, None when not computable) and ``why`` (one line).
    """
    n = measured["samples"]
    if measured.get("labels"):
        name, estimate, interval = "top-1 accuracy drop", measured["drop"], measured["drop_interval"]
    elif "expected_drop" in measured:
        name, estimate, interval = ("expected accuracy drop (float softmax)", measured["expected_drop"],
                                    measured["expected_interval"])
    else:
        name, estimate, interval = "cosine drop", measured["drop"], measured["drop_interval"]
    verdict = _verdict(interval[0], interval[1], budget)
    flips = measured.get("flip_interval")
    if verdict != "holds" and flips is not None and not measured.get("labels") and flips[1] <= budget:
        name, estimate, interval, verdict = "top-1 flips", 100.0 - measured["agreement"], flips, "holds"
    result = {"verdict": verdict, "measure": name, "estimate": round(estimate, 4),
              "interval": [round(interval[0], 4), round(interval[1], 4)], "budget": budget, "samples": n,
              "accept": verdict == "holds" or (verdict == "undecided" and estimate <= budget), "needed": None}
    span = f"{name} {estimate:.2f} points, 95% interval [{interval[0]:.2f}, {interval[1]:.2f}] on {n} samples"
    if verdict == "undecided":
        result["needed"] = _needed(name, measured, estimate, interval, budget)
        more = f"about {result['needed']} samples would decide it" if result["needed"] else \
            "no sample count decides an estimate this close to the budget"
        result["why"] = (f"{span}: the interval contains the budget {budget:g}, so the data cannot tell ({more}); "
                         f"going by the estimate: {'within' if result['accept'] else 'over'} budget")
    else:
        result["why"] = f"{span}: {'within' if verdict == 'holds' else 'over'} the budget {budget:g} (evidence)"
    return result
