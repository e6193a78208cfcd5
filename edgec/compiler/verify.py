"""Verification: compare outputs of the source model, the IR after each stage and the emitted model.

The measure is the relative error ``max |a - b| / max |ref|`` per output (and the max absolute difference),
on generated inputs (seeded) and on calibration samples when given. A float stage beyond tolerance fails the
compile with the numbers.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgec import ir as edgec_ir
from edgec.errors import VerificationError

__all__ = ["compare", "generate_inputs", "ir_runner", "verify_stage"]


def generate_inputs(inputs: list[dict], example_shapes: dict[str, list[int]], seed: int = 0,
                    batch: int | None = None) -> list[np.ndarray]:
    """Seeded inputs for io-signature entries; dynamic dimensions come from ``example_shapes``."""
    rng = np.random.default_rng(seed)
    arrays = []
    for meta in inputs:
        shape = list(example_shapes.get(meta["name"]) or [])
        declared = meta["shape"] or []
        if not shape:
            shape = [d if d is not None else (1 if axis == 0 else None) for axis, d in enumerate(declared)]
            if None in shape:
                from edgec.errors import UsageError

                raise UsageError(f"input {meta['name']!r} has dynamic dimensions {declared}; give "
                                 f"--input-shape {meta['name']}=" + "x".join(str(d or 1) for d in declared))
        if batch is not None and shape and (not declared or declared[0] is None):
            shape[0] = batch
        dtype = np.dtype(meta["dtype"])
        if np.issubdtype(dtype, np.floating):
            arrays.append(rng.standard_normal(shape).astype(dtype))
        elif dtype == np.bool_:
            arrays.append(rng.integers(0, 2, shape).astype(bool))
        else:
            arrays.append(rng.integers(0, 10, shape).astype(dtype))
    return arrays


def ir_runner(model: ir.Model, where: str):
    """Run an IR model with onnxruntime."""
    from edgec.compiler.frontends.onnx import ort_runner

    return ort_runner(edgec_ir.to_proto(model).SerializeToString(), where)


def compare(expected: list[np.ndarray], got: list[np.ndarray], names: list[str]) -> list[dict]:
    """Per output: max absolute difference and relative error."""
    records = []
    for name, want, have in zip(names, expected, got):
        want, have = np.asarray(want, np.float64), np.asarray(have, np.float64)
        if want.shape != have.shape:
            records.append({"output": name, "max_abs_diff": float("inf"), "rel_diff": float("inf"),
                            "detail": f"shape {list(have.shape)} != {list(want.shape)}"})
            continue
        diff = float(np.max(np.abs(want - have))) if want.size else 0.0
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        records.append({"output": name, "max_abs_diff": diff, "rel_diff": diff / scale if scale > 0 else diff})
    return records


def verify_stage(stage: str, reference, candidate, input_sets: list[list[np.ndarray]], names: list[str],
                 tolerance: float | None) -> dict:
    """Run both on every input set; fail when ``tolerance`` is given and the worst relative error exceeds it."""
    worst: dict[str, dict] = {}
    for inputs in input_sets:
        for record in compare(reference(inputs), candidate(inputs), names):
            best = worst.get(record["output"])
            if best is None or record["rel_diff"] > best["rel_diff"]:
                worst[record["output"]] = record
    outputs = [worst[n] for n in names if n in worst]
    max_rel = max((r["rel_diff"] for r in outputs), default=0.0)
    result = {"stage": stage, "max_rel_diff": max_rel,
              "max_abs_diff": max((r["max_abs_diff"] for r in outputs), default=0.0),
              "samples": sum(int(s[0].shape[0]) if s and s[0].ndim else 1 for s in input_sets),
              "outputs": outputs, "tolerance": tolerance}
    if tolerance is not None and not max_rel <= tolerance:
        bad = max(outputs, key=lambda r: r["rel_diff"])
        raise VerificationError(
            f"{stage}: output {bad['output']!r} differs from the source model by {bad['rel_diff']:.3g} relative "
            f"(max abs {bad['max_abs_diff']:.3g}), above the tolerance {tolerance:g}; rerun with --debug, or "
            "--tolerance to accept it"
        )
    return result
