"""Pre-deploy estimates for a model on a target: latency (per op), peak memory, storage and energy.

Latency of one op, in order of preference:

1. *measured*: the profile's ``[performance.measured]`` kernel of the same class, runtime and precision whose
   shape is nearest (log-distance of channels/size), scaled by FLOPs (compute-bound classes) or bytes
   (memory-bound ones: eltwise, pool, gemm with few rows), above the class's fixed per-op cost;
2. *roofline*: max(FLOPs / cpu.peak_gflops_fp32, bytes / bandwidth) plus the per-node overhead, for classes or
   precisions never measured (bandwidth: the measured one when there is one, else memory.bandwidth_gbps).

The model's latency is the sum over ops plus the measured per-inference overhead. Peak memory is
``memory_base + weights_factor x weights + arena_factor x arena`` with the factors calibrated from the memory
probes (uncalibrated: 0, 1, 1). Energy is latency x the measured active power, else the profile's power model.
Every figure carries its basis.
"""

from __future__ import annotations

import math
from pathlib import Path

from edgec.errors import ResourceLimitError
from edgec.targets.model_stats import ModelStats, analyse

__all__ = ["check_limits", "compile_estimate", "estimate_model", "estimate_path", "latency", "load_onnx"]

MEMORY_BOUND = ("eltwise", "pool")
MB = 1 << 20


def load_onnx(path: str | Path):
    import onnx

    return onnx.load(str(path), load_external_data=True)


def _kernel_features(kernel) -> tuple:
    shape = tuple(kernel.shape)
    if kernel.op == "gemm":
        return (shape[0], shape[1], shape[1])
    if kernel.op in ("conv1x1", "conv3x3", "dwconv"):  # channels as (narrow, wide), as model_stats gives them
        return (min(shape[1], kernel.cout), max(shape[1], kernel.cout), shape[2] * shape[3])
    return (math.prod(shape),)


def _distance(a: tuple, b: tuple) -> float:
    if len(a) != len(b):
        return float("inf")
    return sum(abs(math.log(max(x, 1) / max(y, 1))) for x, y in zip(a, b))


def _memory_bound(node) -> bool:
    return node.kind in MEMORY_BOUND or (node.kind == "gemm" and node.features[0] < 8)


class KernelTable:
    """The measured kernels of one runtime, by (class, precision), with each class's fixed per-op cost."""

    def __init__(self, measured, runtime: str):
        self.measured = measured
        self.groups: dict = {}
        for kernel in measured.kernels if measured else ():
            if kernel.runtime == runtime and kernel.status == "ok":
                self.groups.setdefault((kernel.op, kernel.precision), []).append(kernel)

    def fixed_ms(self, kernels: list) -> float:
        # The smallest kernel of a class is mostly fixed cost (dispatch, packing); 80% of it is the floor.
        return 0.8 * min(k.ms for k in kernels)

    def price(self, node) -> tuple[float, str] | None:
        kernels = self.groups.get((node.kind, node.precision))
        if not kernels:
            return None
        nearest = min(kernels, key=lambda k: _distance(node.features, _kernel_features(k)))
        fixed = self.fixed_ms(kernels)
        if _memory_bound(node):
            ratio, by = node.bytes / max(nearest.bytes, 1.0), "bytes"
        else:
            ratio, by = node.flops / max(nearest.flops, 1.0), "FLOPs"
        ms = fixed + max(nearest.ms - fixed, 0.05 * nearest.ms) * ratio
        shape = "x".join(str(d) for d in nearest.shape)
        far = _distance(node.features, _kernel_features(nearest)) > math.log(64)
        basis = (f"measured {nearest.op} {nearest.precision} {shape} ({nearest.ms * 1000:.1f} us) scaled by {by} "
                 f"x{ratio:.3g}" + ("; far from any measured shape" if far else ""))
        return ms, basis


def _roofline(node, profile, bandwidth_gbps: float, node_ms: float) -> tuple[float, str]:
    peak = profile.cpu.peak_gflops_fp32 or profile.cpu.cores * max(profile.cpu.freq_mhz, 1000) * 16 / 1000
    compute_ms = node.flops / (peak * 1e6)
    memory_ms = node.bytes / (bandwidth_gbps * 1e6)
    basis = (f"roofline: {node.flops / 1e6:.3g} MFLOP at {peak:g} GFLOP/s, {node.bytes / 1e6:.3g} MB at "
             f"{bandwidth_gbps:g} GB/s")
    return max(compute_ms, memory_ms) + node_ms, basis


def latency(stats: ModelStats, profile, runtime: str = "onnxruntime", precision: str | None = None) -> dict:
    """Per-op and total latency (ms) of ``stats`` on ``profile``; ``precision`` overrides every compute op's."""
    measured = profile.performance.measured
    table = KernelTable(measured, runtime)
    system = measured.system if measured else None
    node_ms = system.node_overhead_ms if system else 0.0
    bandwidth = (system.bandwidth_gbps if system else 0.0) or profile.memory.bandwidth_gbps or 5.0
    rows, counts = [], {"measured": 0, "roofline": 0, "free": 0}
    for node in stats.nodes:
        if precision and node.kind in ("conv1x1", "conv3x3", "dwconv", "gemm"):
            node = _with_precision(node, precision)
        if node.kind in ("free", "view"):
            ms, basis = (0.0 if node.kind == "free" else node_ms), node.note
            counts["free"] += 1
        else:
            priced = table.price(node)
            if priced is None:
                ms, basis = _roofline(node, profile, bandwidth, node_ms)
                counts["roofline"] += 1
            else:
                ms, basis = priced
                counts["measured"] += 1
        rows.append({"node": node.name, "op": node.op_type, "class": node.kind, "precision": node.precision,
                     "flops": node.flops, "bytes": node.bytes, "ms": ms, "basis": basis})
    overhead = system.runtime_overhead_ms.get(runtime, system.overhead_ms) if system else 0.0
    total = overhead + sum(r["ms"] for r in rows)
    if measured:
        basis = (f"{counts['measured']} ops from kernels measured on {measured.device} ({measured.date}), "
                 f"{counts['roofline']} by roofline, {counts['free']} fused/views; + {overhead * 1000:.1f} us "
                 "per-inference overhead")
    else:
        basis = f"roofline only: {profile.source_file} has no [performance.measured] (run `edgec targets calibrate`)"
    return {"ms": total, "runtime": runtime, "threads": profile.threads, "basis": basis, "ops": rows,
            "counts": counts}


def _with_precision(node, precision: str):
    from dataclasses import replace

    return replace(node, precision=precision)


def _memory(stats: ModelStats, profile) -> dict:
    measured = profile.performance.measured
    if measured:
        s = measured.system
        base, wf, af = s.memory_base_bytes, s.memory_weights_factor, s.memory_arena_factor
        basis = (f"measured on {measured.device}: {base / MB:.1f} MB runtime base + {wf:.2f} x weights + "
                 f"{af:.2f} x activation arena (liveness peak)")
    else:
        base, wf, af = 0.0, 1.0, 1.0
        basis = "weights + activation arena (liveness peak); runtime overhead not included (not calibrated)"
    peak = base + wf * stats.weights_bytes + af * stats.arena_bytes
    ram = profile.memory.ram_mb * MB
    return {"peak_bytes": int(peak), "weights_bytes": stats.weights_bytes, "arena_bytes": stats.arena_bytes,
            "ram_bytes": ram, "fits": peak <= ram, "basis": basis}


def _energy(latency_ms: float, profile) -> dict:
    measured = profile.performance.measured
    if measured and measured.system.active_watts > 0:
        idle, active = measured.system.idle_watts, measured.system.active_watts
        basis = f"measured power on {measured.device} ({measured.system.power_source})"
    elif profile.power.active_watts > 0:
        idle, active = profile.power.idle_watts, profile.power.active_watts
        basis = f"profile power model ({profile.power.source or profile.source_file})"
    else:
        return {"joules": None, "above_idle_joules": None, "basis": "no power model or sensor for this target"}
    seconds = latency_ms / 1000
    return {"joules": active * seconds, "above_idle_joules": (active - idle) * seconds, "watts": active,
            "basis": f"{basis}: {active:g} W active x estimated latency"}


def estimate_model(model, profile, *, storage_bytes: int | None = None, runtime: str | None = None,
                   precision: str | None = None, input_shapes: list | None = None) -> dict:
    """The estimate document of an ``onnx.ModelProto`` on ``profile``.

    ``input_shapes``: concrete shapes for dynamic input dimensions (else they count as 1).
    """
    if input_shapes:
        from edgec.targets.model_stats import pin_input_shapes

        pin_input_shapes(model, input_shapes)
    stats = analyse(model)
    runtime = runtime or "onnxruntime"
    lat = latency(stats, profile, runtime, precision)
    storage = storage_bytes if storage_bytes is not None else model.ByteSize()
    limit = profile.memory.storage_mb * MB
    return {
        "target": profile.name,
        "latency_ms": lat["ms"], "latency_basis": lat["basis"], "runtime": runtime, "threads": lat["threads"],
        "ops": lat["ops"], "op_counts": lat["counts"],
        "memory": _memory(stats, profile),
        "storage": {"bytes": int(storage), "storage_bytes": limit, "fits": storage <= limit,
                    "basis": "bundle files" if storage_bytes is not None else "serialized model"},
        "energy": _energy(lat["ms"], profile),
    }


def estimate_path(path: str | Path, profile) -> dict:
    """Estimate a bundle directory or an ``.onnx`` file (other sources: ``edgec.api.estimate``)."""
    path = Path(path)
    if path.is_dir():
        from edgec.bundle import Bundle

        bundle = Bundle(path)
        if bundle.format != "onnx":
            from edgec.errors import UsageError

            raise UsageError(f"{path}: estimating {bundle.format} bundles is not supported yet; estimate the "
                             "source model instead (edgec estimate SOURCE --target ...)")
        size = sum(f["size"] for f in bundle.manifest["files"].values())
        runtime = (bundle.manifest.get("runtime") or {}).get("name") or "onnxruntime"
        # Dynamic dimensions take the reference inputs' sizes: what `edgec bench` runs.
        shapes = [a.shape for a in bundle.reference()[0]]
        return estimate_model(load_onnx(bundle.model_path), profile, storage_bytes=size, runtime=runtime,
                              input_shapes=shapes)
    return estimate_model(load_onnx(path), profile, storage_bytes=path.stat().st_size)


def check_limits(report: dict, profile, what: str = "the model") -> None:
    """Raise ResourceLimitError when the estimate does not fit the target's RAM or storage."""
    memory, storage = report["memory"], report["storage"]
    if not memory["fits"]:
        raise ResourceLimitError(
            f"{what} needs an estimated {memory['peak_bytes'] / MB:.1f} MB of RAM (weights "
            f"{memory['weights_bytes'] / MB:.1f} MB, activations {memory['arena_bytes'] / MB:.1f} MB) but target "
            f"{profile.name!r} has {profile.memory.ram_mb} MB (memory.ram_mb in {profile.source_file}); "
            "shrink it (--quantize int8, --prune) or pass --ignore-limits")
    if not storage["fits"]:
        raise ResourceLimitError(
            f"{what} takes {storage['bytes'] / MB:.1f} MB but target {profile.name!r} has "
            f"{profile.memory.storage_mb} MB of storage (memory.storage_mb in {profile.source_file}); "
            "shrink it or pass --ignore-limits")


def compile_estimate(ir_model, model_path: Path, fmt: str, profile, options, input_shapes=None) -> dict:
    """The compile report's ``estimate``: the emitted model on the target, and the choices measurements made.

    ``input_shapes``: the shapes of the reference inputs the bundle will carry (in the IR's layout), for
    dynamic dimensions. Raises ResourceLimitError when it cannot fit the target, unless ``options.ignore_limits``.
    """
    from edgec import ir as edgec_ir
    from edgec.targets.decide import choose_format, choose_precision

    proto = load_onnx(model_path) if fmt == "onnx" else edgec_ir.to_proto(ir_model)
    runtime = "onnxruntime" if fmt == "onnx" else "litert"
    report = estimate_model(proto, profile, storage_bytes=model_path.stat().st_size, runtime=runtime,
                            input_shapes=input_shapes)
    report["storage"]["basis"] = "emitted model file"
    if options.ignore_limits:
        report["limits"] = "not enforced (--ignore-limits)"
    else:
        check_limits(report, profile, f"{model_path.name} for target {profile.name!r}")
        report["limits"] = "fits RAM and storage"
    float_stats = analyse(edgec_ir.to_proto(ir_model))
    precision, precision_reason = choose_precision(profile, float_stats, runtime)
    fmt_choice, fmt_reason = choose_format(profile)
    report["decisions"] = {
        "format": {"chosen": fmt, "measured_choice": fmt_choice,
                   "reason": fmt_reason if options.format in (None, "auto") else f"--format {options.format} (given)"},
        "precision": {"measured_choice": precision, "reason": precision_reason},
    }
    return report
