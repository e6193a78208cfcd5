"""The regression statistic: difference of medians against a bootstrap interval of the runs' own noise."""

import numpy as np
import pytest

from edgec.device_agent.stats import latency_samples, latency_stats
from edgec.report.regression import MIN_CHANGE, compare_latency, history_threshold

pytestmark = pytest.mark.unit


def doc(samples_ms, keep_samples=True):
    ns = [round(x * 1e6) for x in samples_ms]
    out = {"latency_ms": latency_stats(ns)}
    if keep_samples:
        out["latency_samples_ms"] = latency_samples(ns)
    return out


def run(center, spread, n=300, seed=0):
    rng = np.random.default_rng(seed)
    return list(np.abs(rng.normal(center, spread, n)) + 0.01)


def test_a_clear_slowdown_on_a_steady_device_is_flagged():
    change = compare_latency(doc(run(10, 0.1, seed=1)), doc(run(10.8, 0.1, seed=2)))
    assert change.verdict == "regression" and change.flagged
    assert change.change == pytest.approx(0.08, abs=0.01)
    assert 0 < change.ci_low < change.change < change.ci_high
    assert change.method == "bootstrap"


def test_the_same_shift_within_a_noisy_runs_spread_is_not_flagged():
    # +8% of the median, but each run's own spread (sd 60% of the median, 100 samples) makes that noise.
    change = compare_latency(doc(run(10, 6, n=100, seed=1)), doc([x + 0.8 for x in run(10, 6, n=100, seed=2)]))
    assert change.verdict == "within noise" and not change.flagged
    assert change.ci_low < 0 < change.ci_high


def test_identical_distributions_are_within_noise_and_an_improvement_is_not_a_regression():
    base = run(10, 1, seed=3)
    assert compare_latency(doc(base), doc(list(reversed(base)))).verdict == "within noise"
    faster = compare_latency(doc(run(10, 0.1, seed=1)), doc(run(8, 0.1, seed=2)))
    assert faster.verdict == "improvement" and not faster.flagged


def test_a_significant_but_tiny_shift_is_below_threshold():
    change = compare_latency(doc(run(10, 0.01, seed=1)), doc(run(10.1, 0.01, seed=2)))
    assert change.ci_low > 0 and change.change < MIN_CHANGE
    assert change.verdict == "below threshold" and not change.flagged


def test_runs_without_samples_use_the_normal_approximation():
    steady = compare_latency(doc(run(10, 0.1, seed=1), False), doc(run(11, 0.1, seed=2), False))
    assert steady.method == "normal approximation" and steady.flagged
    noisy = compare_latency(doc(run(10, 6, n=50, seed=1), False), doc(run(10.8, 6, n=50, seed=2), False))
    assert not noisy.flagged


def test_the_same_runs_give_the_same_interval():
    a, b = doc(run(10, 2, seed=5)), doc(run(10.5, 2, seed=6))
    assert compare_latency(a, b) == compare_latency(a, b)


def test_long_runs_keep_an_evenly_spaced_subset_of_samples():
    kept = latency_samples(list(range(1_000_000, 1_000_000 + 12000)), limit=5000)
    assert len(kept) == 5000 and kept[0] == 1.0 and kept == sorted(kept)


def test_the_threshold_grows_with_the_run_to_run_spread_of_earlier_runs():
    assert history_threshold([10.0, 10.1]) == MIN_CHANGE  # too few runs to measure a spread
    assert history_threshold([10.0, 10.05, 10.0, 10.02]) == MIN_CHANGE  # steady device
    drifting = history_threshold([10.0, 11.5, 9.8, 11.9, 10.1])
    assert drifting > 0.2
    base, new = doc(run(10, 0.1, seed=1)), doc(run(11.0, 0.1, seed=2))  # +10%, far outside within-run noise
    assert compare_latency(base, new).flagged
    unsteady = compare_latency(base, new, min_change=drifting)
    assert unsteady.verdict == "below threshold" and unsteady.threshold == drifting
