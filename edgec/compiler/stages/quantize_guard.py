"""The accuracy guard: quantize, judge the drop by its evidence, buy accuracy back with the cheapest float layers.

1. Everything quantized is measured and judged (``quantize_evidence.decide``): a drop whose 95% interval lies
   within ``--max-accuracy-drop`` holds; one whose interval contains the budget is undecided and goes by the
   point estimate of a continuous measure (never a refusal); only an interval wholly above the budget is over it.
2. Over it: each layer's sensitivity is measured once, on a subset of the held-out samples, as the output noise
   power (1 / SQNR) of the model with that layer alone quantized. Noise from different layers adds up roughly, and
   a drop grows about with the noise amplitude, so the noise to reach is the current one times
   (budget / drop)^2. Layers are ordered by noise removed per unit of cost (``quantize_cost``: bytes and time in
   float); the first guess is the shortest prefix of that order predicted to reach the target noise, then the
   shortest prefix that passes is found by measuring and bisecting (a dozen measurements at most, not one per
   layer).
   Before that, with ``cheap``, the layers whose noise share is many times their cost share are kept float
   whatever the budget (``quantize_select``: measured, undone unless the output noise falls); sensitivities are
   measured with the Relu/Clip a layer alone feeds (``quantize_select.sensitivity_groups``).
3. ``AccuracyBudgetError`` only when the last measurement's interval is wholly above the budget; its message
   shows the interval. An undecided end warns (saying how many samples would decide) and returns, of the
   models measured, the one with the fewest float layers whose estimate is within the best one's interval.
"""

from __future__ import annotations

import warnings

import onnx

from edgec.compiler.quantizers.common import proto_runner
from edgec.compiler.stages.quantize_evidence import decide
from edgec.compiler.stages.quantize_select import buy_cheap_layers
from edgec.errors import AccuracyBudgetError

__all__ = ["GuardResult", "measure_sensitivity", "run_guard"]

SENSITIVITY_SAMPLES = 32  # the noise power is continuous: a few dozen samples rank layers
MAX_ROUNDS = 12
MARGIN = 0.7  # aim below the budget: the additive-noise prediction is rough


class GuardResult:
    """The chosen model, its measured accuracy, the layers left in float, what was tried and the evidence."""

    def __init__(self, proto: onnx.ModelProto, measured: dict | None, excluded: list[str], sensitivity: dict,
                 tried: list[dict], evidence: dict | None = None, costs: dict | None = None):
        self.proto, self.measured, self.excluded = proto, measured, excluded
        self.sensitivity, self.tried, self.evidence, self.costs = sensitivity, tried, evidence, costs or {}
        self.cheap: list[str] = []  # float for their cost, whatever the budget (``quantize_select``)
        self.notes: list[str] = []


def _tried_row(step: int, change: str, measured: dict, evidence: dict) -> dict:
    return {"step": step, "change": change, "drop": measured["drop"], "score": measured["score"],
            "rel_error": measured["rel_error"], "sqnr_db": measured["sqnr_db"], "verdict": evidence["verdict"],
            "estimate": evidence["estimate"], "interval": evidence["interval"], "measure": evidence["measure"]}


def measure_sensitivity(quantizer, evaluator, candidates: list[str], threads: int = 0,
                        groups: dict | None = None, runner=None) -> dict:
    """Node name -> the measure of the model with only that node (and the nodes ``groups`` puts with it, see
    ``quantize_select.sensitivity_groups``) quantized, on a subset of the samples."""
    part = evaluator.subset(SENSITIVITY_SAMPLES)
    groups, runner = groups or {}, runner or _runner
    return {name: part.measure(runner(quantizer.quantize(only=groups.get(name, {name})), threads))
            for name in candidates}


def _runner(proto: onnx.ModelProto, threads: int):
    """The quantized model as the target computes it, not as this machine's int8 kernels do: a guard measuring
    on a compiling host without VNNI saw saturated u8s8 sums and put layers back to float that the target
    quantizes fine (``proto_runner(unfused=True)``)."""
    return proto_runner(proto, threads, unfused=True)


def _predicted_count(order: list[str], start: int, sensitivity: dict, noise: float, target: float) -> int:
    """How many layers of ``order`` (at least ``start`` + 1) bring the predicted noise down to ``target``."""
    count = start
    for name in order[start:]:
        if noise <= target and count > start:
            break
        count += 1
        noise -= sensitivity[name]["noise"]
    return count


def _refusal(evidence: dict, excluded: list[str], candidates: list[str], tried: list[dict]) -> AccuracyBudgetError:
    steps = "; ".join(f"{row['change']}: {row['estimate']:.2f} [{row['interval'][0]:.2f}, {row['interval'][1]:.2f}]"
                      for row in tried)
    error = AccuracyBudgetError(
        f"accuracy drop over --max-accuracy-drop {evidence['budget']:g} with {len(excluded)} of {len(candidates)} "
        f"layers back in float: {evidence['measure']} {evidence['estimate']:.2f} points, 95% interval "
        f"[{evidence['interval'][0]:.2f}, {evidence['interval'][1]:.2f}] on {evidence['samples']} samples; "
        f"tried: {steps}; raise --max-accuracy-drop, give more representative --calibration data, or use a "
        "higher --quantize")
    error.table = tried
    return error


def run_guard(quantizer, evaluator, candidates: list[str], budget: float, threads: int = 0,
              always_measure: bool = False, costs: dict | None = None, groups: dict | None = None,
              cheap: bool = False, runner=None) -> GuardResult:
    """Quantize everything, then buy accuracy back with float layers until the evidence says the budget holds.

    ``evaluator`` None means no data to measure with: the fully quantized model is returned unmeasured.
    ``costs``: node name -> {"cost": ...} (``quantize_cost.layer_costs``); without it every layer costs 1.
    ``groups``: what to quantize with each layer to measure its sensitivity (``quantize_select``).
    ``cheap``: first keep float the layers worth their cost whatever the budget (``quantize_select``).
    ``quantizer.quantize(exclude=..., only=...)`` makes a model (an ONNX proto, TFLite bytes) that
    ``runner(model, threads)`` runs; ``runner`` defaults to onnxruntime (``_runner``).
    """
    runner = runner or _runner
    proto = quantizer.quantize()
    if evaluator is None:
        return GuardResult(proto, None, [], {}, [])
    measured = evaluator.measure(runner(proto, threads))
    evidence = decide(measured, budget)
    tried = [_tried_row(0, "all layers quantized", measured, evidence)]
    sensitivity = (measure_sensitivity(quantizer, evaluator, candidates, threads, groups, runner) if always_measure
                   else {})
    base, notes = [], []
    if cheap and costs:
        base, (proto, measured, evidence), notes = buy_cheap_layers(
            quantizer, lambda p: evaluator.measure(runner(p, threads)),
            lambda names: measure_sensitivity(quantizer, evaluator, names, threads, groups, runner),
            (proto, measured, evidence), costs, candidates, sensitivity, tried, _tried_row)
    if evidence["accept"]:
        return _done(proto, measured, base, sensitivity, tried, evidence, costs, base, notes)
    missing = [n for n in candidates if n not in sensitivity]
    sensitivity.update(measure_sensitivity(quantizer, evaluator, missing, threads, groups, runner))
    costs = costs or {name: {"cost": 1.0} for name in candidates}
    gain = {n: sensitivity[n]["noise"] / max(costs[n]["cost"], 1e-9) for n in candidates}
    order = base + sorted((n for n in candidates if n not in base), key=lambda n: (-gain[n], n))
    limit = len(candidates) - 1  # every layer in float is not quantization: stop before that
    # the longest prefix of ``order`` known to fail (or the cheap layers kept float), the shortest known to pass
    low, best = len(base), None
    seen = [(low, proto, measured, evidence)]
    count = _predicted_count(order, low, sensitivity, measured["noise"], _target(measured, evidence, budget))
    for _ in range(MAX_ROUNDS):
        count = min(count, limit)
        if count <= low or (best is not None and count >= best[0]):
            break
        proto = quantizer.quantize(exclude=order[:count])
        measured = evaluator.measure(runner(proto, threads))
        evidence = decide(measured, budget)
        tried.append(_tried_row(len(tried), f"{count} layers in float (.. {order[count - 1]})", measured, evidence))
        seen.append((count, proto, measured, evidence))
        if evidence["accept"]:
            best = (count, proto, measured, evidence)
            count = (low + count) // 2  # bisect towards the fewest float layers that still pass
        else:
            low = count
            count = (low + best[0]) // 2 if best else _predicted_count(
                order, low, sensitivity, measured["noise"], _target(measured, evidence, budget))
    if best is not None:
        count, proto, measured, evidence = best
        return _done(proto, measured, order[:count], sensitivity, tried, evidence, costs, base, notes)
    if evidence["verdict"] == "exceeds":
        raise _refusal(evidence, order[:low], candidates, tried)
    count, proto, measured, evidence = _fewest_like_best(seen, order, quantizer, evaluator, budget, tried, threads,
                                                         runner)
    return _done(proto, measured, order[:count], sensitivity, tried, evidence, costs, base, notes)


def _fewest_like_best(seen: list[tuple], order, quantizer, evaluator, budget, tried, threads, runner) -> tuple:
    """Nothing passed and the data cannot tell: the fewest float layers whose estimate lies within the 95%
    interval of the best estimate (more float layers would cost size and speed for no demonstrable gain),
    found by bisecting between the measured counts."""
    best = min(seen, key=lambda s: s[3]["estimate"])
    ceiling = best[3]["interval"][1]
    inside = [s for s in seen if s[3]["estimate"] <= ceiling]
    outside = [s[0] for s in seen if s[3]["estimate"] > ceiling]
    for _ in range(MAX_ROUNDS):
        high = min(inside, key=lambda s: s[0])
        low = max([c for c in outside if c < high[0]], default=-1)
        if high[0] - low <= 1:
            break
        count = (low + high[0]) // 2
        proto = quantizer.quantize(exclude=order[:count])
        measured = evaluator.measure(runner(proto, threads))
        evidence = decide(measured, budget)
        tried.append(_tried_row(len(tried), f"{count} layers in float (.. {order[max(count - 1, 0)]})", measured,
                                evidence))
        (inside if evidence["estimate"] <= ceiling else outside).append(
            (count, proto, measured, evidence) if evidence["estimate"] <= ceiling else count)
    return min(inside, key=lambda s: s[0])


def _target(measured: dict, evidence: dict, budget: float) -> float:
    """The output noise power expected to bring the drop to ``MARGIN`` x budget (drop ~ noise amplitude)."""
    return measured["noise"] * (MARGIN * budget / max(evidence["estimate"], 1e-6)) ** 2


def _done(proto, measured, excluded, sensitivity, tried, evidence, costs, cheap=(), notes=()) -> GuardResult:
    if evidence["verdict"] == "undecided":
        warnings.warn(f"accuracy guard: {evidence['why']}", stacklevel=3)
    result = GuardResult(proto, measured, list(excluded), sensitivity, tried, evidence, costs)
    result.cheap, result.notes = [n for n in cheap if n in excluded], list(notes)
    return result
