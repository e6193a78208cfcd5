"""How edgec decides that outputs match their reference: the one definition every check uses.

The convention of Polygraphy and ONNX's backend tests: an output matches when, element by element,
``|got - ref| <= atol + rtol * |ref|``. Each record also carries the figures people read:

* ``max_abs_diff``: ``max |got - ref|``;
* ``rel_diff``: ``max |got - ref| / max |ref|`` (the relative error of the worst element against the output's
  scale; reported, not judged: on an output that is ~0 everywhere it divides by ~0);
* ``worst``: the largest ``|got - ref| / (atol + rtol * |ref|)``: the output matches when ``worst <= 1``.

The compiler verifies float stages with ``FLOAT_RTOL``/``FLOAT_ATOL`` (``--rtol``/``--atol``); the device agent
checks a bundle's reference outputs with the tolerances its manifest carries. This module ships to devices with
the agent: standard library only at import (numpy is imported lazily), Python 3.9 syntax.
"""

from __future__ import annotations

__all__ = ["FLOAT_ATOL", "FLOAT_REFERENCE_RTOL", "FLOAT_RTOL", "QUANT_REFERENCE_RTOL", "REFERENCE_ATOL",
           "compare_output", "compare_outputs", "describe", "matches"]

# A float rewrite (folded batch norm, reordered sums, another runtime's fp32 kernels) moves an output by about
# 1e-6 of its scale; these leave two to three orders of magnitude of room and still catch a wrong weight,
# layout or op (errors of order 1e-2..1).
FLOAT_RTOL = 1e-3
FLOAT_ATOL = 1e-4
# The device-side check of a bundle's reference outputs (the manifest's ``reference.rtol``), for float and for
# quantized bundles: kernels and thread counts differ between the compiling machine and the device. Its absolute
# part is per output, ``rtol`` x the output's largest magnitude, at least REFERENCE_ATOL.
FLOAT_REFERENCE_RTOL, QUANT_REFERENCE_RTOL, REFERENCE_ATOL = 1e-3, 5e-2, 1e-6


def compare_output(name: str, want, got, rtol: float, atol: float) -> dict:
    """One output against its reference: ``{output, ok, max_abs_diff, rel_diff, worst}`` (+ ``detail``)."""
    import numpy as np

    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    if want.shape != got.shape:
        return {"output": name, "ok": False, "max_abs_diff": float("inf"), "rel_diff": float("inf"),
                "worst": float("inf"), "detail": f"shape {list(got.shape)} != reference {list(want.shape)}"}
    if not want.size:
        return {"output": name, "ok": True, "max_abs_diff": 0.0, "rel_diff": 0.0, "worst": 0.0}
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(want - got)
    same = (want == got) | (np.isnan(want) & np.isnan(got))  # equal infinities and NaN where the reference has NaN
    diff = np.where(same, 0.0, np.where(np.isnan(diff), np.inf, diff))
    allowed = atol + rtol * np.abs(np.nan_to_num(want, nan=0.0, posinf=0.0, neginf=0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        worst = float(np.max(np.where(diff == 0, 0.0, diff / np.maximum(allowed, 1e-300))))
    max_abs = float(np.max(diff))
    finite = want[np.isfinite(want)]
    scale = float(np.max(np.abs(finite))) if finite.size else 0.0
    return {"output": name, "ok": bool(worst <= 1.0), "max_abs_diff": max_abs,
            "rel_diff": max_abs / scale if scale > 0 else max_abs, "worst": worst}


def compare_outputs(names, expected, got, rtol: float, atol) -> list:
    """One record per output; ``atol`` is one number or one per output."""
    atols = list(atol) if isinstance(atol, (list, tuple)) else [atol] * len(names)
    return [compare_output(n, w, g, rtol, a) for n, w, g, a in zip(names, expected, got, atols)]


def matches(expected, got, rtol: float = FLOAT_RTOL, atol: float = FLOAT_ATOL) -> bool:
    """True when every output matches its reference (the same number of outputs, each within tolerance)."""
    if got is None or len(got) != len(expected):
        return False
    return all(r["ok"] for r in compare_outputs([str(k) for k in range(len(expected))], expected, got, rtol, atol))


def describe(record: dict) -> str:
    """What a failing record says: its detail, else the figures (``worst`` x the allowed difference)."""
    if record.get("detail"):
        return record["detail"]
    text = f"max abs diff {record['max_abs_diff']:.3g}, relative {record['rel_diff']:.3g}"
    return text + (f", {record['worst']:.3g}x the allowed difference" if record.get("worst") is not None else "")
