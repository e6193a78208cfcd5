"""Target profiles: TOML data about a device, loaded into frozen dataclasses.

Every target-specific decision in edgec reads a ``TargetProfile``; nothing branches on a target's name.
Loading rejects unknown keys and wrong types, naming the file and the key. A profile may extend another with
``base = "rpi4"`` (a built-in name or a path); tables merge key by key, the extending file winning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union, get_args, get_origin, get_type_hints

from edgec.errors import TargetError

__all__ = [
    "CpuSpec",
    "MeasuredKernel",
    "MeasuredSpec",
    "MeasuredSystem",
    "MemorySpec",
    "OpsSpec",
    "PerformanceFigure",
    "PerformanceSpec",
    "PowerSpec",
    "QuantizationSpec",
    "RuntimeSpec",
    "TargetProfile",
    "profile_from_dict",
]

Format = Literal["onnx", "tflite"]
Runtime = Literal["onnxruntime", "litert"]
Precision = Literal["none", "fp16", "int8", "int4", "auto"]
IntDtype = Literal["int8", "uint8"]
CalibrationMethod = Literal["minmax", "entropy", "percentile", "mse"]
ISA_FEATURES = frozenset(
    {"neon", "asimd", "dotprod", "fp16", "i8mm", "bf16", "sve", "crc32", "sse4_2", "avx", "avx2", "fma",
     "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx"}
)


@dataclass(frozen=True)
class CpuSpec:
    arch: Literal["aarch64", "armv7l", "x86_64"]
    model: str
    cores: int
    isa_features: tuple[str, ...] = ()
    freq_mhz: int = 0
    # Peak fp32 GFLOP/s of all cores together (0 = unknown); used by roofline estimates.
    peak_gflops_fp32: float = 0.0

    def __post_init__(self):
        _positive("cpu.cores", self.cores)
        unknown = sorted(set(self.isa_features) - ISA_FEATURES)
        if unknown:
            raise ValueError(f"cpu.isa_features: unknown feature(s) {unknown}; known: {sorted(ISA_FEATURES)}")

    def has(self, feature: str) -> bool:
        return feature in self.isa_features


@dataclass(frozen=True)
class MemorySpec:
    ram_mb: int
    storage_mb: int
    bandwidth_gbps: float = 0.0

    def __post_init__(self):
        _positive("memory.ram_mb", self.ram_mb)
        _positive("memory.storage_mb", self.storage_mb)


@dataclass(frozen=True)
class RuntimeSpec:
    preferred: Runtime
    format: Format
    available: tuple[str, ...] = ("onnxruntime",)
    threads: int = 0  # 0 = all cores

    def __post_init__(self):
        for name in self.available:
            if name not in get_args(Runtime):
                raise ValueError(f"runtime.available: unknown runtime {name!r}; known: {list(get_args(Runtime))}")
        if self.preferred not in self.available:
            raise ValueError(f"runtime.preferred {self.preferred!r} is not in runtime.available {list(self.available)}")


@dataclass(frozen=True)
class QuantizationSpec:
    default: Precision = "none"
    supported: tuple[str, ...] = ("none", "int8")
    activation_dtype: IntDtype = "uint8"
    weight_dtype: IntDtype = "int8"
    per_channel: bool = True
    symmetric_weights: bool = True
    symmetric_activations: bool = False
    reduce_range: bool = False
    calibration_method: CalibrationMethod = "minmax"
    int4_block_size: int = 32
    int4_accuracy_level: int = 4
    fp16_arithmetic: bool = False
    max_accuracy_drop: float = 1.0
    # Ops the target's runtime runs slower quantized than in float: they stay float, with this reason.
    float_ops: tuple[str, ...] = ()
    tflite_io_dtype: Literal["int8", "uint8", "float32"] = "int8"
    dynamic_range_ok: bool = False
    # Passes beyond plain post-training quantization (defaults measured by benchmarks/quantization.py).
    equalize_layers: bool = True
    absorb_bias: bool = True
    bias_correction: bool = True
    # AdaRound-style weight rounding fitted on the calibration data, kept per layer where its held-out output error
    # is lower (quantizers/rounding.py). Off: on EfficientNet-Lite2 it lowered every layer's weight error but not
    # the model's agreement (activation ranges dominate there); on for weight-limited models (e.g. per-tensor).
    adaptive_rounding: bool = False
    # --quantize auto, measured on x86 (benchmarks/quantization.py): below this many multiply-accumulates per
    # sample, or with narrower layers (MAC-weighted mean output channels), Q/DQ overhead outweighs int8 kernels.
    auto_min_macs: int = 10000000
    auto_min_channels: int = 128
    # --quantize auto: int4 weight-only when MatMul/Gemm weights hold at least this share of all weights.
    auto_int4_min_share: float = 0.5

    def __post_init__(self):
        for name in self.supported:
            if name not in get_args(Precision):
                raise ValueError(f"quantization.supported: unknown precision {name!r}")
        if self.int4_block_size < 16 or self.int4_block_size & (self.int4_block_size - 1):
            raise ValueError(f"quantization.int4_block_size: {self.int4_block_size} is not a power of two >= 16")
        if not 0 <= self.max_accuracy_drop <= 100:
            raise ValueError(f"quantization.max_accuracy_drop: {self.max_accuracy_drop} is not within 0..100 points")


@dataclass(frozen=True)
class OpsSpec:
    min_opset: int = 13
    max_opset: int = 21
    unsupported: tuple[str, ...] = ()


@dataclass(frozen=True)
class PowerSpec:
    # Sensor sources to try, in order, by the agent's names ("hwmon", "rapl", "jetson", "battery", "command").
    sensors: tuple[str, ...] = ()
    idle_watts: float = 0.0
    active_watts: float = 0.0
    source: str = ""  # where the model's figures come from

    def __post_init__(self):
        if self.idle_watts < 0 or self.active_watts < 0:
            raise ValueError("power: idle_watts and active_watts must be >= 0")
        if self.active_watts and self.active_watts < self.idle_watts:
            raise ValueError(f"power.active_watts {self.active_watts} is below idle_watts {self.idle_watts}")


@dataclass(frozen=True)
class PerformanceFigure:
    model: str
    runtime: str
    precision: str
    latency_ms: float
    threads: int = 0
    source: str = ""


@dataclass(frozen=True)
class MeasuredKernel:
    """One micro-benchmark: ``op`` at ``shape`` (its input) through ``runtime`` at ``precision``.

    ``ms`` is the median time of ONE op (chain time minus the per-inference overhead, divided by ``repeat``);
    ``spread`` is (p90 - p50) / p50 of the chain. ``status`` "unsupported" means the runtime could not run it.
    """

    op: str
    runtime: str
    precision: str
    shape: tuple[int, ...]
    cout: int
    flops: float
    bytes: float
    ms: float
    spread: float = 0.0
    repeat: int = 1
    status: Literal["ok", "unsupported"] = "ok"
    note: str = ""


@dataclass(frozen=True)
class MeasuredSystem:
    """Whole-model figures: per-inference and per-node overhead, bandwidth, load cost, memory, threads, power."""

    overhead_ms: float
    node_overhead_ms: float
    bandwidth_gbps: float
    load_ms: float
    memory_base_bytes: float
    memory_weights_factor: float
    memory_arena_factor: float
    threads: int
    thread_speedup: tuple[float, ...] = ()  # speed-up at 1, 2, ... threads of one conv, relative to 1 thread
    idle_watts: float = 0.0
    active_watts: float = 0.0
    power_source: str = "none"
    # Per-inference overhead of each runtime measured (``overhead_ms`` is onnxruntime's).
    runtime_overhead_ms: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MeasuredSpec:
    """``[performance.measured]``: written by ``edgec targets calibrate`` (edgec.targets.calibrate)."""

    schema: int
    date: str
    device: str
    device_identity: dict
    runtimes: dict
    system: MeasuredSystem
    kernels: tuple[MeasuredKernel, ...]
    quick: bool = False
    agent_version: str = ""
    notes: tuple[str, ...] = ()

    def __post_init__(self):
        if self.schema != 1:
            raise ValueError(f"performance.measured.schema = {self.schema}: this edgec reads 1; recalibrate")
        if not self.kernels:
            raise ValueError("performance.measured.kernels: empty; recalibrate with `edgec targets calibrate`")
        for i, k in enumerate(self.kernels):
            if k.status == "ok" and not (k.ms > 0 and k.flops >= 0 and k.bytes >= 0 and k.repeat >= 1):
                raise ValueError(f"performance.measured.kernels[{i}]: ms must be > 0, flops/bytes >= 0 "
                                 f"(got ms={k.ms}, flops={k.flops}, bytes={k.bytes}); recalibrate")
        if self.system.overhead_ms < 0 or self.system.bandwidth_gbps <= 0 or self.system.threads < 1:
            raise ValueError("performance.measured.system: overhead_ms >= 0, bandwidth_gbps > 0 and threads >= 1 "
                             "are required; recalibrate")


@dataclass(frozen=True)
class PerformanceSpec:
    figures: tuple[PerformanceFigure, ...] = ()
    # Measured micro-benchmark tables written by `edgec targets calibrate`; None when never calibrated.
    measured: Optional[MeasuredSpec] = None


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    cpu: CpuSpec
    memory: MemorySpec
    runtime: RuntimeSpec
    quantization: QuantizationSpec = QuantizationSpec()
    ops: OpsSpec = OpsSpec()
    power: PowerSpec = PowerSpec()
    performance: PerformanceSpec = PerformanceSpec()
    base: str = ""
    source_file: str = field(default="", compare=False)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("source_file")
        return data

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    @property
    def threads(self) -> int:
        return self.runtime.threads or self.cpu.cores


def _positive(key: str, value) -> None:
    if value <= 0:
        raise ValueError(f"{key}: must be > 0, got {value}")


def profile_from_dict(data: dict, source: str) -> TargetProfile:
    """Build a profile from merged TOML data; errors name ``source`` and the offending key."""
    try:
        profile = _build(TargetProfile, {**data, "source_file": source}, "")
    except _KeyProblem as exc:
        raise TargetError(f"{source}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise TargetError(f"{source}: {exc}") from None
    return profile


class _KeyProblem(Exception):
    pass


def _build(cls, data: Any, prefix: str):
    if not isinstance(data, dict):
        raise _KeyProblem(f"{prefix.rstrip('.') or 'profile'}: expected a table, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise _KeyProblem(f"unknown key '{prefix}{unknown[0]}'; known keys here: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{prefix}{name}")
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise _KeyProblem(f"missing key '{prefix}{missing[0]}'")
    return cls(**kwargs)


def _convert(hint, value, key: str):
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    if origin is Literal:
        if value not in get_args(hint):
            raise _KeyProblem(f"{key} = {value!r} is not one of {list(get_args(hint))}")
        return value
    if origin is tuple:
        item = get_args(hint)[0]
        if not isinstance(value, list):
            raise _KeyProblem(f"{key}: expected an array, got {type(value).__name__}")
        return tuple(_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is Union:
        inner = [a for a in get_args(hint) if a is not type(None)]
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            return _build(inner[0], value, key + ".")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise _KeyProblem(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _KeyProblem(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _KeyProblem(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _KeyProblem(f"{key}: expected a string, got {value!r}")
        return value
    if hint is dict:
        if not isinstance(value, dict):
            raise _KeyProblem(f"{key}: expected a table, got {type(value).__name__}")
        return value
    raise _KeyProblem(f"{key}: unsupported type {hint}")
