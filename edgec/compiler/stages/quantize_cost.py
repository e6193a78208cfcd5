"""What keeping a layer in float costs on the target: bytes, and time where the profile measured int8 speed.

Keeping a layer's weights in float32 instead of int8 adds 3 bytes per weight; running it in float instead of
int8 adds the layer's share of the model's MACs times (1 - 1 / int8 speed-up). The speed-up is the geometric mean
of fp32/int8 kernel times the profile measured (``edgec targets calibrate``) on the preferred runtime, else
``DEFAULT_INT8_SPEEDUP``. Both are fractions of the float model, and their sum is the cost the mixed-precision
choice weighs against a layer's sensitivity.
"""

from __future__ import annotations

import math

__all__ = ["costs_from_figures", "int8_speedup", "layer_costs"]

DEFAULT_INT8_SPEEDUP = 2.0
WEIGHTED = ("Conv", "Gemm", "MatMul", "ConvTranspose")


def int8_speedup(profile) -> tuple[float, str]:
    """(fp32 time / int8 time, where the figure comes from)."""
    measured = profile.performance.measured
    runtime = profile.runtime.preferred
    if measured is not None:
        table: dict = {}
        for k in measured.kernels:
            if k.status == "ok" and k.runtime == runtime and k.op in WEIGHTED and k.precision in ("fp32", "int8"):
                table.setdefault((k.op, tuple(k.shape)), {})[k.precision] = k.ms
        pairs = [v["fp32"] / v["int8"] for v in table.values() if "fp32" in v and "int8" in v and v["int8"] > 0]
        if pairs:
            ratio = math.exp(sum(math.log(r) for r in pairs) / len(pairs))
            return ratio, f"{len(pairs)} kernels measured on {measured.device}"
    return DEFAULT_INT8_SPEEDUP, "assumed (no measured int8 kernels in the profile)"


def _group_figures(model, groups: dict) -> dict[str, tuple[int, int, int]]:
    """An op-type group (``quantizers.scope.op_groups``) as (output elements per sample, 0 weights, 0): a weightless
    op does about one operation per output element, which is its time in float."""
    import numpy as np

    outputs = {n.name: n.outputs[0] for n in model.graph if n.outputs}
    figures = {}
    for group, members in groups.items():
        elements = 0
        for name in members:
            shape = outputs[name].shape if name in outputs else None
            elements += int(np.prod([d if isinstance(d, int) else 1 for d in shape[1:]])) if shape else 1
        figures[group] = (elements, 0, 0)
    return figures


def layer_costs(model, profile, names, groups: dict | None = None) -> dict[str, dict]:
    """Node name (or op-type group name with ``groups``) -> {"bytes": extra bytes in float, "size_share",
    "time_share", "cost"} for ``names``."""
    from edgec.compiler.quantizers.common import weighted_nodes
    from edgec.compiler.stages.quantize_policy import layer_figures

    figures = {n.name: layer_figures(n)[:2] for n in weighted_nodes(model)}
    totals = (sum(m for m, _ in figures.values()), sum(p for _, p in figures.values()))
    figures.update({name: figure[:2] for name, figure in _group_figures(model, groups or {}).items()})
    return costs_from_figures(figures, names, profile, totals)


def costs_from_figures(figures: dict[str, tuple[int, int]], names, profile,
                       totals: tuple[int, int] | None = None) -> dict[str, dict]:
    """``layer_costs`` from (MACs, weight parameters) per name: the same formula for any graph (the TFLite
    emitter's ops too). ``totals``: the model's (MACs, parameters), else the sum of ``figures``."""
    total_macs, total_params = totals or (sum(m for m, _ in figures.values()), sum(p for _, p in figures.values()))
    total_macs, total_params = max(total_macs, 1), max(total_params, 1)
    speedup, _ = int8_speedup(profile)
    slow = max(0.0, 1.0 - 1.0 / speedup)
    costs = {}
    for name in names:
        macs, params = figures.get(name, (0, 0))
        size_share = 3.0 * params / (4.0 * total_params)
        time_share = slow * macs / total_macs
        costs[name] = {"bytes": 3 * params, "size_share": round(size_share, 6), "time_share": round(time_share, 6),
                       "cost": size_share + time_share}
    return costs
