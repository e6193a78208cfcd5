"""Which precision a model gets: the user's ``--quantize``, else the profile's default, with ``auto`` resolved from
the profile and the model's structure. Every decision comes with the reason the report prints.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgec.compiler.passes import const
from edgec.compiler.quantizers.common import weighted_nodes
from edgec.errors import UsageError

__all__ = ["already_quantized", "isa_requirements", "layer_figures", "model_profile", "resolve_precision"]


# Ops that only a quantized model holds (dynamic, QOperator and weight-only forms; QDQ pairs are counted apart).
QUANTIZED_OPS = frozenset({
    "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat", "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearSigmoid",
    "QLinearLeakyRelu", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSoftmax",
    "QLinearReduceMean", "QLinearWhere", "QGemm", "QAttention", "MatMulNBits", "MatMulBnb4", "GatherBlockQuantized",
})


def already_quantized(model: ir.Model) -> str:
    """What makes ``model`` an already quantized one (``"ConvInteger x3, DynamicQuantizeLSTM x1"``), or ""."""
    counts: dict[str, int] = {}
    for node in model.graph:
        if node.op_type in QUANTIZED_OPS or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    if "DequantizeLinear" not in counts:  # a lone QuantizeLinear (e.g. an int8 output) is no quantized compute
        counts.pop("QuantizeLinear", None)
    return ", ".join(f"{op} x{n}" for op, n in sorted(counts.items()))


def _dims(value: ir.Value | None) -> list[int] | None:
    if value is None or value.shape is None:
        return None
    dims = [d if isinstance(d, int) else 1 for d in value.shape]
    return dims


def layer_figures(node: ir.Node) -> tuple[int, int, int]:
    """(MACs per sample, weight parameters, output channels) of a weighted node."""
    weight = const(node.inputs[1])
    out = _dims(node.outputs[0])
    if node.op_type in ("Conv", "ConvTranspose"):
        macs = (int(np.prod(out[2:])) if out and len(out) > 2 else 1) * weight.size
        return int(macs), int(weight.size), int(weight.shape[0])
    macs = (int(np.prod(out[1:-1])) if out and len(out) > 2 else 1) * weight.size
    return int(macs), int(weight.size), int(weight.shape[-1] if node.op_type == "MatMul" else min(weight.shape))


def model_profile(model: ir.Model) -> dict:
    """Counts that drive ``auto``: MACs per sample, weight parameters by kind, conv and matmul layer counts, and
    the MAC-weighted mean output channels (int8 kernels need wide layers to beat float)."""
    macs, conv_params, matmul_params, convs, matmuls, channel_macs = 0, 0, 0, 0, 0, 0.0
    for node in weighted_nodes(model):
        layer, params, channels = layer_figures(node)
        if node.op_type in ("Conv", "ConvTranspose"):
            convs += 1
            conv_params += params
        else:
            matmuls += 1
            matmul_params += params
        macs += layer
        channel_macs += layer * channels
    return {"macs": int(macs), "conv_params": int(conv_params), "matmul_params": int(matmul_params),
            "convs": convs, "matmuls": matmuls, "mean_channels": round(channel_macs / max(macs, 1), 1)}


def _check_supported(precision: str, profile, flag: str) -> None:
    spec = profile.quantization
    if precision not in spec.supported:
        raise UsageError(f"{flag} {precision}: target {profile.name!r} cannot run it (quantization.supported = "
                         f"{list(spec.supported)} in {profile.source_file or 'the profile'}); choose one of those")
    if precision == "fp16" and not spec.fp16_arithmetic:
        raise UsageError(f"{flag} fp16: target {profile.name!r} has no fp16 arithmetic (quantization."
                         f"fp16_arithmetic = false in {profile.source_file or 'the profile'}); fp16 would run slower "
                         "than float32 there: use int8 or none")


def _auto(model: ir.Model, profile, fmt: str, has_data: bool) -> tuple[str, str]:
    spec = profile.quantization
    stats = model_profile(model)
    total = stats["conv_params"] + stats["matmul_params"]
    if total == 0:
        return "none", "no Conv/MatMul/Gemm weights to quantize"
    share = stats["matmul_params"] / total
    if stats["macs"] < spec.auto_min_macs:
        return "none", (f"{stats['macs']:,} MACs per sample < quantization.auto_min_macs {spec.auto_min_macs:,}: "
                        "Q/DQ overhead would make a quantized model slower than float on this target")
    if fmt == "onnx" and "int4" in spec.supported and share >= spec.auto_int4_min_share and stats["matmuls"]:
        return "int4", (f"MatMul/Gemm hold {share:.0%} of {total:,} weights (>= quantization.auto_int4_min_share "
                        f"{spec.auto_int4_min_share:.0%}): int4 weight-only, block {spec.int4_block_size}")
    from edgec.targets.decide import choose_auto_precision  # a calibrated profile: the measured speeds decide

    measured = choose_auto_precision(profile, model, fmt, has_data)
    if measured is not None:
        return measured
    if stats["mean_channels"] < spec.auto_min_channels:
        return "none", (f"layers average {stats['mean_channels']:g} output channels (MAC-weighted) < "
                        f"quantization.auto_min_channels {spec.auto_min_channels}: int8 kernels on channels this "
                        "narrow run slower than float on this target")
    if "int8" in spec.supported and has_data:
        return "int8", (f"{stats['convs']} Conv / {stats['matmuls']} MatMul layers, {stats['macs']:,} MACs per "
                        "sample: int8 static QDQ")
    if "int8" in spec.supported:
        return "none", "int8 would suit this model but no --calibration data were given"
    if "fp16" in spec.supported and spec.fp16_arithmetic:
        return "fp16", "the target has fp16 arithmetic and int8 is not supported"
    return "none", f"no precision in quantization.supported {list(spec.supported)} fits this model"


def resolve_precision(model: ir.Model, profile, options, fmt: str, has_data: bool) -> tuple[str, str]:
    """(precision, reason): none, fp16, int8 or int4."""
    spec = profile.quantization
    requested = options.quantize
    if requested is None:
        precision = spec.default
        if precision in ("none", "auto"):
            return _auto(model, profile, fmt, has_data) if precision == "auto" else ("none", "profile default")
        if precision == "int8" and not has_data:
            return "none", ("the profile's default is int8 (quantization.default) but no --calibration data were "
                            "given: kept float")
        _check_supported(precision, profile, "quantization.default")
        return precision, f"the profile's default (quantization.default = {precision!r})"
    if requested == "none":
        return "none", "--quantize none"
    if requested == "auto":
        return _auto(model, profile, fmt, has_data)
    _check_supported(requested, profile, "--quantize")
    if requested == "int8" and not has_data:
        raise UsageError("--quantize int8 needs calibration data: give --calibration DATA (.npz named after the "
                         "inputs, an image directory with --preprocess, or file.py:function)")
    if requested == "int4" and fmt != "onnx":
        raise UsageError(f"--quantize int4 is weight-only int4 for onnxruntime (MatMulNBits); --format {fmt} "
                         "cannot carry it: use --format onnx or --quantize int8")
    return requested, f"--quantize {requested}"


VNNI_FLAGS = ["avx512_vnni", "avx_vnni", "amx_int8"]


def isa_requirements(profile, precision: str, fmt: str) -> list[dict]:
    """CPU features the chosen int8 scheme assumes (``report.quantization.requires``; the agent's ``check``
    compares them with the device's /proc/cpuinfo): ``{arch, any_of, effect, reason}`` per assumption."""
    if precision != "int8":
        return []
    spec, cpu = profile.quantization, profile.cpu
    needs = []
    if (cpu.arch == "x86_64" and fmt == "onnx" and spec.activation_dtype == "uint8" and spec.weight_dtype == "int8"
            and not spec.reduce_range):
        needs.append({"arch": "x86_64", "any_of": VNNI_FLAGS, "effect": "accuracy",
                      "reason": f"U8S8 int8 with 8-bit weights (profile {profile.name!r}, quantization.reduce_range "
                                "= false) saturates in VPMADDUBSW on x86 without VNNI: outputs degrade; recompile "
                                "for this device (--target host, or a profile with reduce_range = true)"})
    if cpu.arch == "aarch64" and "dotprod" in cpu.isa_features:
        needs.append({"arch": "aarch64", "any_of": ["asimddp"], "effect": "speed",
                      "reason": f"int8 was chosen for {profile.name!r}, whose cores have int8 dot-product "
                                "instructions; without them int8 may run slower than float: recompile for this "
                                "device's profile"})
    return needs
