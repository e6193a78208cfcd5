"""The calibration suite: micro-benchmark models generated on the host and written as ordinary bundles.

Each model is a chain of ``repeat`` identical, shape-preserving ops (a 3x3 Conv with as many output channels
as input channels, a depthwise Conv, a square Gemm, a 3x3 MaxPool with stride 1, an Add), so the per-op time is
(chain time - per-inference overhead) / repeat. fp16 models take fp16 inputs and weights; int8 models are the
fp32 model quantized by onnxruntime.quantization (static QDQ, per-channel, as the compiler's int8 bundles are),
``int8-dynamic`` the same with dynamic-range quantization. Bundles hold data only (no code), so the device agent
runs them unchanged; their reference outputs come from onnxruntime here (fp16: from the fp32 model).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgec.bundle import MANIFEST_NAME, SCHEMA_VERSION, manifest_bytes, sha256_file, write_atomically

__all__ = ["OP_CLASSES", "SUITE_VERSION", "KernelSpec", "build_bundle", "op_cost", "suite", "thread_probes"]

SUITE_VERSION = 1
OPSET = 17
# Kernel classes the estimator knows; every model op maps to one of them or to the roofline.
OP_CLASSES = ("conv1x1", "conv3x3", "dwconv", "gemm", "pool", "eltwise")
PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic")


@dataclass(frozen=True)
class KernelSpec:
    """One micro-benchmark model: ``op`` on an input of ``shape`` (NCHW, or [M, K] for gemm), ``repeat`` times.

    ``purpose`` is "kernel" (a table row), "overhead", "memory" or "threads" (system figures).
    """

    op: str
    shape: tuple
    precision: str = "fp32"
    repeat: int = 4
    purpose: str = "kernel"
    threads: int = 0  # 0 = the profile's thread count
    # conv1x1 only: the chain alternates C -> expand x C -> C (MobileNet's expansion and projection layers).
    expand: int = 1
    runtime: str = "onnxruntime"  # or "litert": a .tflite bundle (microbench_tflite)

    @property
    def key(self) -> str:
        text = json.dumps({**asdict(self), "suite": SUITE_VERSION}, sort_keys=True)
        shape = "x".join(str(d) for d in self.shape)
        grow = f"-e{self.expand}" if self.expand > 1 else ""
        lite = "tflite-" if self.runtime == "litert" else ""
        return f"{lite}{self.op}-{self.precision}-{shape}{grow}-r{self.repeat}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"

    @property
    def cout(self) -> int:
        return int(self.shape[1]) * self.expand


def op_cost(op: str, shape: tuple, expand: int = 1) -> tuple[float, float]:
    """(FLOPs, bytes moved at fp32) of ONE op of the suite at ``shape``; the estimator uses the same formulas."""
    if op == "gemm":
        m, k = shape
        return 2.0 * m * k * k, 4.0 * (m * k * 2 + k * k + k)
    n, c, h, w = shape
    act = n * c * h * w
    if op == "conv1x1":  # with expand > 1: the mean of the expansion and the projection (same FLOPs)
        return 2.0 * act * c * expand, 4.0 * ((1 + expand) * act + c * c * expand)
    if op == "conv3x3":
        return 2.0 * act * c * 9, 4.0 * (2 * act + 9 * c * c)
    if op == "dwconv":
        return 2.0 * act * 9, 4.0 * (2 * act + 9 * c)
    if op == "pool":
        return 9.0 * act, 4.0 * 2 * act
    if op == "eltwise":
        return float(act), 4.0 * 2 * act
    raise ValueError(f"unknown micro-benchmark op {op!r}")


# (op, shape) of the full suite: MobileNet/ResNet-like channel counts and resolutions, batch 1.
# The first shape of each class is tiny: its time is mostly the class's fixed per-op cost.
_FULL = {
    "conv1x1": [(1, 8, 8, 8), (1, 16, 112, 112), (1, 32, 56, 56), (1, 64, 28, 28), (1, 96, 14, 14), (1, 160, 7, 7),
                (1, 384, 14, 14)],
    "conv3x3": [(1, 8, 8, 8), (1, 16, 56, 56), (1, 32, 32, 32), (1, 32, 112, 112), (1, 64, 16, 16), (1, 128, 8, 8)],
    "dwconv": [(1, 8, 8, 8), (1, 32, 112, 112), (1, 144, 56, 56), (1, 192, 28, 28), (1, 576, 14, 14), (1, 960, 7, 7)],
    "gemm": [(1, 16), (1, 64), (1, 256), (1, 512), (1, 1024), (16, 256)],
    "pool": [(1, 32, 56, 56), (1, 64, 14, 14)],
    "eltwise": [(1, 16, 16, 16), (1, 32, 56, 56), (1, 64, 128, 128)],
}
_QUICK = {
    "conv1x1": [(1, 32, 28, 28)],
    "conv3x3": [(1, 8, 8, 8), (1, 16, 32, 32)],
    "dwconv": [(1, 64, 28, 28)],
    "gemm": [(1, 256)],
    "pool": [(1, 16, 28, 28)],
    "eltwise": [(1, 16, 16, 16), (1, 32, 64, 64)],
}
_QUANTIZABLE = ("conv1x1", "conv3x3", "dwconv", "gemm")
# MobileNetV2's expansion/projection 1x1 convolutions: (input shape, expansion); full suite only.
_EXPANDING = [((1, 16, 112, 112), 6), ((1, 24, 56, 56), 6), ((1, 32, 28, 28), 6), ((1, 64, 14, 14), 6),
              ((1, 96, 14, 14), 6), ((1, 160, 7, 7), 6)]
# A chain stops at about this many FLOPs, so that one run stays short (shared machines preempt long runs).
_CHAIN_FLOPS = 60e6


def _repeat(op: str, shape: tuple, quick: bool, expand: int = 1) -> int:
    if expand > 1:
        return 2
    most = 2 if quick else 4
    return max(1, min(most, int(_CHAIN_FLOPS // max(op_cost(op, shape)[0], 1.0))))


def thread_probes(quick: bool, cores: int, runtime: str = "onnxruntime") -> list[KernelSpec]:
    """The same conv at 1..``cores`` threads: which thread count the kernel tables are measured at."""
    shape = (1, 16, 32, 32) if quick else (1, 32, 56, 56)
    return [KernelSpec("conv3x3", shape, repeat=2 if quick else 4, purpose="threads", threads=t, runtime=runtime)
            for t in range(1, cores + 1)]


def suite(quick: bool = False, precisions: tuple = PRECISIONS, runtimes: tuple = ("onnxruntime",)) -> list[KernelSpec]:
    """The calibration suite: kernel rows, then the overhead and memory probes, for each runtime.

    The memory probes are ONNX models: a device with LiteRT only gets no memory calibration.
    """
    specs = _onnx_suite(quick, precisions) if "onnxruntime" in runtimes else []
    if "litert" in runtimes:
        specs += _litert_suite(quick, precisions, only=len(specs) == 0)
    return specs


def _litert_suite(quick: bool, precisions: tuple, only: bool = False) -> list[KernelSpec]:
    from dataclasses import replace

    kernels = [replace(s, runtime="litert") for s in _onnx_suite(quick, precisions) if s.purpose == "kernel"]
    if quick and not only:  # converting with TensorFlow takes about a second per model: the quick suite keeps four
        kernels = [s for s in kernels if s.op in ("conv3x3", "gemm") and s.precision in ("fp32", "int8")
                   and s.shape != (1, 8, 8, 8)]
    return kernels + [KernelSpec("eltwise", (1, 1, 1, 1), repeat=r, purpose="overhead", runtime="litert")
                      for r in (1, 16)]


def _onnx_suite(quick: bool, precisions: tuple) -> list[KernelSpec]:
    table = _QUICK if quick else _FULL
    specs = []
    for op, shapes in table.items():
        for shape in shapes:
            for precision in precisions:
                if precision.startswith("int8") and op not in _QUANTIZABLE:
                    continue
                if precision == "int8-dynamic" and op == "dwconv":  # onnxruntime has no depthwise ConvInteger path
                    continue
                specs.append(KernelSpec(op, shape, precision, repeat=_repeat(op, shape, quick)))
    for shape, expand in [] if quick else _EXPANDING:
        specs += [KernelSpec("conv1x1", shape, precision, repeat=2, expand=expand) for precision in precisions]
    specs += [
        KernelSpec("eltwise", (1, 1, 1, 1), repeat=1, purpose="overhead"),
        KernelSpec("eltwise", (1, 1, 1, 1), repeat=16, purpose="overhead"),
        KernelSpec("gemm", (1, 512 if quick else 1024), repeat=4, purpose="memory"),
        KernelSpec("eltwise", (1, 16, 128, 128) if quick else (1, 32, 256, 256), repeat=4, purpose="memory"),
    ]
    return specs


def _node(op: str, x: str, y: str, c: int, i: int, helper, inits: list, rng, dtype, cout: int = 0) -> object:
    if op == "gemm":
        k = c
        inits.append(_tensor(f"w{i}", rng.standard_normal((k, k)) / math.sqrt(k), dtype))
        inits.append(_tensor(f"b{i}", rng.standard_normal(k) * 0.1, dtype))
        return helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [y])
    if op in ("conv1x1", "conv3x3", "dwconv"):
        kernel = 1 if op == "conv1x1" else 3
        group = c if op == "dwconv" else 1
        cout = cout or c
        fan_in = (c // group) * kernel * kernel
        weight = rng.standard_normal((cout, c // group, kernel, kernel)) / math.sqrt(fan_in)
        inits.append(_tensor(f"w{i}", weight, dtype))
        inits.append(_tensor(f"b{i}", rng.standard_normal(cout) * 0.1, dtype))
        pad = kernel // 2
        return helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [y], kernel_shape=[kernel, kernel],
                                pads=[pad] * 4, group=group)
    if op == "pool":
        return helper.make_node("MaxPool", [x], [y], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
    inits.append(_tensor(f"a{i}", np.full((1,), 0.5 / (i + 1)), dtype))
    return helper.make_node("Add", [x, f"a{i}"], [y])


def _tensor(name: str, array, dtype):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(array).astype(dtype), name)


def float_model(spec: KernelSpec, dtype=np.float32):
    """The fp32 (or fp16) ONNX chain of ``spec``."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(sum(spec.op.encode()) + spec.shape[1])
    elem = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    c = spec.shape[1]
    nodes, inits = [], []
    for i in range(spec.repeat):
        x = "x" if i == 0 else f"t{i}"
        y = "y" if i == spec.repeat - 1 else f"t{i + 1}"
        # An expanding chain alternates C -> expand x C (even steps) -> C (odd steps).
        cin, cout = (c, c * spec.expand) if i % 2 == 0 else (c * spec.expand, c)
        nodes.append(_node(spec.op, x, y, cin, i, helper, inits, rng, dtype, cout))
    shape = list(spec.shape)
    graph = helper.make_graph(nodes, "microbench", [helper.make_tensor_value_info("x", elem, shape)],
                              [helper.make_tensor_value_info("y", elem, shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edgec-calibrate")
    model.ir_version = 8
    return model


def _quantized(spec: KernelSpec, fp32_path: Path, out_path: Path, sample: np.ndarray) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    logging.disable(logging.WARNING)  # its "consider pre-processing" advice is for users, not for this suite
    try:
        _quantize(spec, fp32_path, out_path, sample, quantize_dynamic, quantize_static, CalibrationDataReader,
                  QuantFormat, QuantType)
    finally:
        logging.disable(logging.NOTSET)


def _quantize(spec, fp32_path, out_path, sample, quantize_dynamic, quantize_static, CalibrationDataReader,
              QuantFormat, QuantType) -> None:
    if spec.precision == "int8-dynamic":
        quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8,
                         per_channel=spec.op != "gemm")
        return

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": sample}, {"x": sample * 0.5}])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(fp32_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def _run(path: Path, feed: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": feed})[0]


def _write_tflite(spec: KernelSpec, tmp: Path, sample: np.ndarray) -> tuple[Path, np.ndarray, np.ndarray]:
    from edgec.runtimes import load_runtime
    from edgec.targets.microbench_tflite import nhwc_shape, tflite_bytes

    feed = sample if len(spec.shape) == 2 else np.ascontiguousarray(sample.transpose(0, 2, 3, 1))
    assert feed.shape == nhwc_shape(spec.shape)
    model_path = tmp / "model.tflite"
    model_path.write_bytes(tflite_bytes(spec, feed))
    return model_path, feed, load_runtime("litert").load(model_path, threads=1).run([feed])[0]


def _write_model(spec: KernelSpec, tmp: Path, sample: np.ndarray) -> tuple[Path, np.ndarray, np.ndarray]:
    """model.onnx (or model.tflite) in ``tmp``; returns (path, reference input, reference output)."""
    import onnx

    if spec.runtime == "litert":
        return _write_tflite(spec, tmp, sample)

    fp32 = tmp / "fp32.onnx"
    onnx.save(float_model(spec), fp32)
    model_path = tmp / "model.onnx"
    if spec.precision == "fp16":
        onnx.save(float_model(spec, np.float16), model_path)
        feed = sample.astype(np.float16)
        return model_path, feed, _run(fp32, feed.astype(np.float32)).astype(np.float16)
    if spec.precision == "fp32":
        fp32.rename(model_path)
    else:
        _quantized(spec, fp32, model_path, sample)
    return model_path, sample, _run(model_path, sample)


_TOLERANCE = {"fp32": (1e-3, 1e-5), "fp16": (3e-2, 1e-2), "int8": (0.15, 0.05), "int8-dynamic": (0.15, 0.05)}


def build_bundle(spec: KernelSpec, out: Path) -> Path:
    """Write the bundle of ``spec`` to ``out`` (atomically); reused when it is already there."""
    if (out / MANIFEST_NAME).is_file():
        return out

    def fill(tmp: Path) -> None:
        sample = np.random.default_rng(0).uniform(-1, 1, spec.shape).astype(np.float32)
        with tempfile.TemporaryDirectory() as work:
            model_path, feed, expected = _write_model(spec, Path(work), sample)
            (tmp / model_path.name).write_bytes(model_path.read_bytes())
        (tmp / "reference").mkdir()
        with open(tmp / "reference" / "inputs.npz", "wb") as handle:
            np.savez(handle, i0=feed)
        with open(tmp / "reference" / "outputs.npz", "wb") as handle:
            np.savez(handle, o0=expected)
        lite = spec.runtime == "litert"
        dtype = "float16" if spec.precision == "fp16" and not lite else "float32"
        layout = "nc" if spec.op == "gemm" else ("nhwc" if lite else "nchw")
        io = {kind: [{"name": name, "shape": list(feed.shape), "dtype": dtype, "layout": layout}]
              for kind, name in (("inputs", "x"), ("outputs", "y"))}
        model_file = "model.tflite" if lite else "model.onnx"
        files = {rel: {"sha256": sha256_file(tmp / rel), "size": (tmp / rel).stat().st_size}
                 for rel in (model_file, "reference/inputs.npz", "reference/outputs.npz")}
        rtol, atol = _TOLERANCE[spec.precision]
        manifest = {"schema_version": SCHEMA_VERSION, "name": spec.key, "format": "tflite" if lite else "onnx",
                    "model_file": model_file, "io": io, "files": files,
                    "runtime": {"name": spec.runtime, "threads": spec.threads or None},
                    "reference": {"inputs": "reference/inputs.npz", "outputs": "reference/outputs.npz",
                                  "rtol": rtol, "atol": atol},
                    "target": {"name": "calibration"}, "microbench": asdict(spec), "passes": [], "report": {}}
        (tmp / MANIFEST_NAME).write_bytes(manifest_bytes(manifest))

    write_atomically(out, fill, force=True)
    return out
