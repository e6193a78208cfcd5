"""The guard's choice of float layers: by noise removed per cost, the fewest that pass (prediction, then
bisection), and on an undecided end the fewest whose estimate is within the best one's interval.

A stand-in quantizer returns the set of float layers as its "model" and a stand-in evaluator scores it from
per-layer noise figures; only the onnxruntime session factory is replaced (the "models" here are not ONNX).
"""

from __future__ import annotations

import pytest

from edgec.compiler.stages import quantize_guard
from edgec.errors import AccuracyBudgetError

pytestmark = pytest.mark.unit

NOISE = {"stem": 0.20, "dw1": 0.12, "big": 0.02, "a": 0.004, "b": 0.004, "c": 0.003, "d": 0.002}
COST = {"stem": 0.001, "dw1": 0.001, "big": 0.3, "a": 0.05, "b": 0.05, "c": 0.05, "d": 0.05}


class Quantizer:
    def quantize(self, exclude=(), only=None):
        quantized = set(NOISE) - set(exclude) if only is None else set(only)
        return frozenset(quantized)


class Evaluator:
    """Drop ~ sqrt(noise) x 5 points; the interval's half-width is ``spread``."""

    def __init__(self, spread: float):
        self.spread, self.samples = spread, list(range(32))
        self.calls = 0

    def subset(self, count):
        return self

    def measure(self, quantized):
        self.calls += 1
        noise = sum(NOISE[n] for n in quantized)
        drop = 5.0 * noise ** 0.5
        low, high = max(0.0, drop - self.spread), drop + self.spread
        return {"samples": 64, "labels": False, "agreement": 100.0 - drop, "flip_interval": [low, high + 5],
                "expected_drop": drop, "expected_interval": [low, high], "drop": drop, "score": 100 - drop,
                "rel_error": noise ** 0.5, "noise": noise, "sqnr_db": 0.0}


@pytest.fixture(autouse=True)
def identity_runner(monkeypatch):
    monkeypatch.setattr(quantize_guard, "proto_runner", lambda proto, threads=0, unfused=False: proto)


def _costs():
    return {n: {"cost": c} for n, c in COST.items()}


def test_cheap_noisy_layers_go_float_first_and_the_fewest_that_pass_are_kept():
    evaluator = Evaluator(spread=0.05)
    result = quantize_guard.run_guard(Quantizer(), evaluator, list(NOISE), budget=1.0, costs=_costs())
    assert set(result.excluded) == {"stem", "dw1"}  # "big" would help too, but costs 300x as much
    assert result.evidence["verdict"] == "holds"
    assert evaluator.calls <= len(NOISE) + 1 + quantize_guard.MAX_ROUNDS  # sensitivity once, then a few rounds


def test_an_undecided_end_keeps_the_fewest_layers_within_the_best_interval():
    evaluator = Evaluator(spread=2.0)  # wide intervals: nothing is ever decided
    result = quantize_guard.run_guard(Quantizer(), evaluator, list(NOISE), budget=0.05, costs=_costs())
    assert result.evidence["verdict"] == "undecided"
    tried = {row["change"]: row for row in result.tried}
    best = min(row["estimate"] for row in tried.values())
    most = max(len(r["change"]) for r in tried.values())
    assert result.measured["expected_drop"] <= best + 2.0 and result.excluded == ["stem"]  # 1.96 <= 0.22 + 2
    assert most > 0  # more float layers were measured and judged no better within the interval


def test_a_refusal_needs_an_interval_wholly_over_the_budget():
    with pytest.raises(AccuracyBudgetError) as caught:
        quantize_guard.run_guard(Quantizer(), Evaluator(spread=0.01), list(NOISE), budget=0.001, costs=_costs())
    assert "95% interval [" in str(caught.value)


def test_layers_worth_their_cost_stay_float_even_when_the_budget_holds():
    from edgec.compiler.stages.quantize_select import CHEAP_LIMIT, WORTH

    evaluator = Evaluator(spread=0.05)
    result = quantize_guard.run_guard(Quantizer(), evaluator, list(NOISE), budget=100.0, costs=_costs(), cheap=True)
    assert result.evidence["verdict"] == "holds"
    assert result.cheap == ["stem", "dw1"] == result.excluded  # best noise share per cost first; "big" is dear
    total = sum(NOISE.values())
    assert all(NOISE[n] / total / COST[n] >= WORTH for n in result.cheap)
    assert sum(COST[n] for n in result.cheap) <= CHEAP_LIMIT
    assert "kept" in result.tried[-1]["change"] and result.measured["noise"] < 0.75 * total
    plain = quantize_guard.run_guard(Quantizer(), Evaluator(spread=0.05), list(NOISE), budget=100.0, costs=_costs())
    assert plain.excluded == [] and plain.cheap == []  # without ``cheap`` a holding budget keeps full int8


def test_cheap_float_layers_are_undone_when_the_measured_noise_does_not_fall():
    class Stubborn(Evaluator):  # the noise measured on the whole model does not follow the layers' sum
        def measure(self, quantized):
            result = super().measure(quantized)
            if len(quantized) > 1:
                result["noise"] = sum(NOISE.values())
            return result

    result = quantize_guard.run_guard(Quantizer(), Stubborn(spread=0.05), list(NOISE), budget=100.0,
                                      costs=_costs(), cheap=True)
    assert result.excluded == [] and result.cheap == []
    assert "undone" in result.tried[-1]["change"]
