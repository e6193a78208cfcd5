"""Choices made from measurements: which precision and which format/runtime are fastest on this device.

Both read the profile's ``[performance.measured]`` tables. Without them they return the profile's own choice
and say so. With them, the candidates are priced by the estimator on the model itself (``choose_precision``) or
on the kernels both runtimes measured (``choose_format``), and the reason names the figures that decided:
int8 is slower than fp32 on some ARM boards without dot-product instructions, and dynamic-range int8 is slower
than fp32 on conv nets (the estimator prices ConvInteger/MatMulInteger from the ``int8-dynamic`` kernels).
"""

from __future__ import annotations

import math

__all__ = ["choose_auto_precision", "choose_format", "choose_precision", "precision_costs"]

# --quantize names -> kernel-table precisions.
_PRECISION_KERNELS = {"none": "fp32", "fp16": "fp16", "int8": "int8", "int8-dynamic": "int8-dynamic"}
_FORMATS = {"onnxruntime": "onnx", "litert": "tflite"}


def _runtime(profile) -> str:
    return profile.runtime.preferred


def precision_costs(profile, model_stats, runtime: str | None = None) -> dict:
    """Estimated latency (ms) of ``model_stats`` at each precision the profile supports and has measured."""
    from edgec.targets.estimate import latency

    runtime = runtime or "onnxruntime"
    measured = profile.performance.measured
    have = {(k.runtime, k.precision) for k in measured.kernels if k.status == "ok"} if measured else set()
    costs = {}
    for option, kernel_precision in _PRECISION_KERNELS.items():
        supported = option in profile.quantization.supported or (
            option == "int8-dynamic" and profile.quantization.dynamic_range_ok)
        if supported and (runtime, kernel_precision) in have:
            costs[option] = latency(model_stats, profile, runtime, kernel_precision)["ms"]
    return costs


def choose_precision(profile, model_stats, runtime: str | None = None) -> tuple[str, str]:
    """(precision for ``--quantize``, reason). ``model_stats``: ``edgec.targets.model_stats.analyse(model)``.

    Without measured tables: the profile's ``quantization.default`` (``auto`` there means int8).
    """
    default = profile.quantization.default if profile.quantization.default != "auto" else "int8"
    measured = profile.performance.measured
    if measured is None:
        return default, (f"profile default quantization.default = {profile.quantization.default!r} "
                         f"({profile.source_file}); no measured tables (run `edgec targets calibrate`)")
    costs = precision_costs(profile, model_stats, runtime)
    if "none" not in costs or len(costs) < 2:
        return default, f"profile default: fewer than two precisions measured on {measured.device}"
    best = min(costs, key=costs.get)
    listed = ", ".join(f"{name} {ms:.3g} ms" for name, ms in sorted(costs.items(), key=lambda kv: kv[1]))
    return best, (f"estimated from kernels measured on {measured.device} ({measured.date[:10]}): {listed}; "
                  f"{best} is fastest")


def _ratio(measured, fast: str, slow: str) -> tuple[float, int] | None:
    """Geometric mean of slow/fast kernel time over the fp32 kernels both runtimes measured, and how many."""
    table: dict = {}
    for k in measured.kernels:
        if k.status == "ok" and k.precision == "fp32":
            table.setdefault((k.op, tuple(k.shape)), {})[k.runtime] = k.ms
    pairs = [v for v in table.values() if fast in v and slow in v]
    if not pairs:
        return None
    return math.exp(sum(math.log(v[slow] / v[fast]) for v in pairs) / len(pairs)), len(pairs)


def choose_format(profile) -> tuple[str, str]:
    """(format, reason): the runtime whose measured fp32 kernels are faster, among the profile's available ones."""
    default = profile.runtime.format
    measured = profile.performance.measured
    if measured is None:
        return default, f"profile runtime.format = {default!r} ({profile.source_file}); no measured tables"
    runtimes = sorted({k.runtime for k in measured.kernels if k.status == "ok"} & set(profile.runtime.available))
    if len(runtimes) < 2:
        # One runtime measured is no comparison: keep the profile's format rather than follow a missing figure.
        only = runtimes[0] if runtimes else "none"
        return default, f"profile runtime.format = {default!r}; only {only} measured on {measured.device}"
    a, b = runtimes[0], runtimes[1]
    compared = _ratio(measured, a, b)
    if compared is None:
        return default, f"profile runtime.format = {default!r}; {a} and {b} share no measured fp32 kernel"
    ratio, count = compared
    fast, slow, factor = (a, b, ratio) if ratio >= 1 else (b, a, 1 / ratio)
    return _FORMATS[fast], (f"{fast} is {factor:.2f}x faster than {slow} over {count} fp32 kernels measured on "
                            f"{measured.device} ({measured.date[:10]})")


def choose_auto_precision(profile, ir_model, fmt: str, has_data: bool) -> tuple[str, str] | None:
    """``--quantize auto`` from measurements: the fastest of none / fp16 / int8 (int8 only with calibration
    data) by the estimator on this model, or None when fewer than two of them were measured on the device.

    ``ir_model``: the onnx-ir model the quantization stage holds.
    """
    measured = profile.performance.measured
    if measured is None:
        return None
    from edgec import ir as edgec_ir
    from edgec.targets.model_stats import analyse

    runtime = "onnxruntime" if fmt == "onnx" else "litert"
    costs = precision_costs(profile, analyse(edgec_ir.to_proto(ir_model)), runtime)
    allowed = {"none", "int8"} if has_data else {"none"}
    if profile.quantization.fp16_arithmetic:
        allowed.add("fp16")
    costs = {name: ms for name, ms in costs.items() if name in allowed}
    if len(costs) < 2:
        return None
    best = min(costs, key=costs.get)
    listed = ", ".join(f"{name} {ms:.3g} ms" for name, ms in sorted(costs.items(), key=lambda kv: kv[1]))
    return best, (f"measured on {measured.device} ({measured.date[:10]}): estimated {listed} with {runtime}; "
                  f"{best} is fastest")
