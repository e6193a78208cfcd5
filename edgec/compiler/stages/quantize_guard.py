"""The accuracy guard: quantize, measure, and return the most sensitive layers to float until the budget holds.

Per-layer sensitivity is measured by quantizing that one layer alone and scoring the model against the float
model (drop in points first, relative output error to break ties). Layers then go back to float in order of
sensitivity, one at a time, until the drop is within ``--max-accuracy-drop``; if even the last candidate does
not get there, ``AccuracyBudgetError`` carries the table of what was tried.
"""

from __future__ import annotations

import onnx

from edgec.compiler.passes.quantize_common import proto_runner
from edgec.errors import AccuracyBudgetError

__all__ = ["GuardResult", "run_guard"]


class GuardResult:
    """The chosen model, its measured accuracy, the layers left in float and what was tried."""

    def __init__(self, proto: onnx.ModelProto, measured: dict | None, excluded: list[str], sensitivity: dict,
                 tried: list[dict]):
        self.proto, self.measured, self.excluded = proto, measured, excluded
        self.sensitivity, self.tried = sensitivity, tried


def _tried_row(step: int, change: str, measured: dict) -> dict:
    return {"step": step, "change": change, "drop": measured["drop"], "score": measured["score"],
            "rel_error": measured["rel_error"]}


def _table_text(tried: list[dict]) -> str:
    return "; ".join(f"{row['change']}: drop {row['drop']:.2f}" for row in tried)


def _runner(proto: onnx.ModelProto, threads: int):
    """The quantized model as the target computes it, not as this machine's int8 kernels do: a guard measuring
    on a compiling host without VNNI saw saturated u8s8 sums and put layers back to float that the target
    quantizes fine (``proto_runner(unfused=True)``)."""
    return proto_runner(proto, threads, unfused=True)


def measure_sensitivity(quantizer, evaluator, candidates: list[str], threads: int) -> dict:
    """Node name -> the measure of the model with only that node quantized."""
    return {name: evaluator.measure(_runner(quantizer.quantize(only={name}), threads)) for name in candidates}


def run_guard(quantizer, evaluator, candidates: list[str], budget: float, threads: int = 0,
              always_measure: bool = False) -> GuardResult:
    """Quantize everything, then fall back layer by layer until ``evaluator``'s drop is within ``budget``.

    ``evaluator`` None means no data to measure with: the fully quantized model is returned unmeasured.
    """
    proto = quantizer.quantize()
    if evaluator is None:
        return GuardResult(proto, None, [], {}, [])
    measured = evaluator.measure(_runner(proto, threads))
    tried = [_tried_row(0, "all layers quantized", measured)]
    sensitivity = measure_sensitivity(quantizer, evaluator, candidates, threads) if always_measure else {}
    if measured["drop"] <= budget:
        return GuardResult(proto, measured, [], sensitivity, tried)
    sensitivity = sensitivity or measure_sensitivity(quantizer, evaluator, candidates, threads)
    order = sorted(candidates, key=lambda n: (-sensitivity[n]["drop"], -sensitivity[n]["rel_error"], n))
    excluded: list[str] = []
    for name in order[:-1]:  # leaving every layer in float is not quantization: stop before that
        excluded.append(name)
        proto = quantizer.quantize(exclude=excluded)
        measured = evaluator.measure(_runner(proto, threads))
        tried.append(_tried_row(len(tried), f"+ {name} in float", measured))
        if measured["drop"] <= budget:
            return GuardResult(proto, measured, list(excluded), sensitivity, tried)
    error = AccuracyBudgetError(
        f"accuracy drop {measured['drop']:.2f} points ({measured['metric']}) still exceeds --max-accuracy-drop "
        f"{budget:g} with {len(excluded)} of {len(candidates)} layers back in float; tried: {_table_text(tried)}; "
        "raise --max-accuracy-drop, give more representative --calibration data, or use a higher --quantize")
    error.table = tried
    raise error
