"""Verification: compare outputs of the source model, the IR after each stage and the emitted model.

An output matches when ``|a - b| <= atol + rtol * |ref|`` element by element (``edgec.compare``, the convention
of Polygraphy and ONNX's backend tests); the report also shows the max absolute and max relative difference.
Inputs are the calibration samples when given, else seeded generated inputs (plus a second size for dynamic
dimensions). A float stage that does not match fails the compile with the numbers.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgec import ir as edgec_ir
from edgec.compare import FLOAT_ATOL, FLOAT_RTOL, compare_outputs, describe
from edgec.compiler.inputs import generate_inputs
from edgec.errors import VerificationError

__all__ = ["compare", "generate_inputs", "ir_runner", "verify_stage"]


def ir_runner(model: ir.Model, where: str):
    """Run an IR model with onnxruntime."""
    from edgec.compiler.frontends.onnx import ort_runner

    return ort_runner(edgec_ir.to_proto(model).SerializeToString(), where)


def compare(expected: list[np.ndarray], got: list[np.ndarray], names: list[str], rtol: float = FLOAT_RTOL,
            atol: float = FLOAT_ATOL) -> list[dict]:
    """Per output: ok, max absolute difference, relative error and ``worst`` (``edgec.compare``)."""
    return compare_outputs(names, expected, got, rtol, atol)


def verify_stage(stage: str, reference, candidate, input_sets: list[list[np.ndarray]], names: list[str],
                 tolerance: tuple[float, float] | None) -> dict:
    """Run both on every input set; with ``tolerance`` = (rtol, atol), fail when an output does not match.

    ``tolerance`` None (a quantized or pruned stage) records the figures without judging them.
    """
    rtol, atol = tolerance if tolerance is not None else (FLOAT_RTOL, FLOAT_ATOL)
    worst: dict[str, dict] = {}
    for inputs in input_sets:
        for record in compare(reference(inputs), candidate(inputs), names, rtol, atol):
            best = worst.get(record["output"])
            if best is None:
                worst[record["output"]] = record
                continue
            best["ok"] = best["ok"] and record["ok"]
            best.update({k: max(best[k], record[k]) for k in ("max_abs_diff", "rel_diff", "worst")})
            if "detail" in record:
                best.setdefault("detail", record["detail"])
    outputs = [worst[n] for n in names if n in worst]
    result = {"stage": stage, "max_rel_diff": max((r["rel_diff"] for r in outputs), default=0.0),
              "max_abs_diff": max((r["max_abs_diff"] for r in outputs), default=0.0),
              "worst": max((r["worst"] for r in outputs), default=0.0),
              "samples": sum(int(s[0].shape[0]) if s and s[0].ndim else 1 for s in input_sets),
              "outputs": outputs, "tolerance": rtol if tolerance is not None else None,
              "atol": atol if tolerance is not None else None}
    failed = [r for r in outputs if not r["ok"]]
    if tolerance is not None and failed:
        bad = max(failed, key=lambda r: r["worst"])
        raise VerificationError(
            f"{stage}: output {bad['output']!r} differs from the source model ({describe(bad)}; allowed: |a-b| <= "
            f"{atol:g} + {rtol:g}*|ref|); rerun with --debug, or --rtol/--atol to accept it")
    return result
