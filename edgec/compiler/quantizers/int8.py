"""INT8 static QDQ quantization with onnxruntime's quantizer, driven by ranges edgec computes.

Activation ranges are calibrated once (streamed over the calibration samples) and handed to
``onnxruntime.quantization.quantize_static`` as a calibration cache, so the accuracy guard can re-quantize with
different layers left in float without calibrating again:

* ``minmax``, ``entropy``, ``percentile``: onnxruntime's own calibrators;
* ``mse``: per tensor, the clipping range that minimises the expected quantization error (clipping error outside
  the range plus rounding error inside, over a 2048-bin histogram of the calibration values) instead of the raw
  min/max that one outlier can stretch.

Weights: symmetric, per-channel or per-tensor, int8, 7-bit when the profile sets ``reduce_range``; activations
uint8 or int8 as the profile says. Bias correction (``correct_bias``) is applied to the float graph of the
layers being quantized before each quantizer run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from edgec import ir as edgec_ir
from edgec.compiler.passes.correct_bias import CorrectBias, input_means
from edgec.compiler.quantizers.common import WEIGHTED_OPS, batch_size, make_session, with_outputs
from edgec.compiler.quantizers.derive import VariantMaker
from edgec.compiler.quantizers.scope import activation_followers, expand, float_scope, op_groups
from edgec.errors import CompileError

__all__ = ["Int8Quantizer", "mse_ranges", "quantized_nodes"]

BINS = 2048
# Samples per onnxruntime calibrator call: it holds every activation of a call in memory (gigabytes for a
# 260x260 CNN over a hundred samples), then folds them into its running ranges or histograms.
CHUNK_SAMPLES = 8
# onnxruntime drops a Relu/Clip after a quantized op by default, trusting the output's range to clip; measured on
# silero-vad's encoder (Conv -> Relu x4) that changes 16% of speech decisions (0.81 vs 0.96 agreement with the
# Relus kept). Kept, the runtime still fuses them into its int8 kernels where that is exact.
KEEP_ACTIVATIONS = True


class _Reader:
    """onnxruntime CalibrationDataReader over a CalibrationSet (streamed)."""

    def __init__(self, samples, names: list[str], batch: int, limit: int):
        self._batches = samples.batches(batch, limit)
        self._names = names

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else dict(zip(self._names, batch))


def _float_tensors(model: ir.Model) -> list[str]:
    """Every float activation tensor (node inputs/outputs that are not constants)."""
    names = []
    seen = set()
    for node in model.graph:
        for value in [*node.inputs, *node.outputs]:
            if (value is None or value.name in seen or value.const_value is not None or value.dtype is None
                    or value.dtype != ir.DataType.FLOAT):
                continue
            seen.add(value.name)
            names.append(value.name)
    return names


def _best_range(hist: np.ndarray, low: float, high: float, levels: int) -> tuple[float, float]:
    """The [a, b] within [low, high] (scaled towards zero) minimising expected squared quantization error."""
    edges = np.linspace(low, high, len(hist) + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    weights = hist / max(hist.sum(), 1)
    best, choice = np.inf, (low, high)
    for alpha in np.linspace(0.1, 1.0, 91):
        a, b = alpha * low, alpha * high
        step = (b - a) / levels
        if step <= 0:
            continue
        clipped = np.clip(centers, a, b)
        error = np.sum(weights * ((centers - clipped) ** 2 + np.where(centers == clipped, step * step / 12, 0.0)))
        if error < best - 1e-15:
            best, choice = error, (a, b)
    return choice


def mse_ranges(model: ir.Model, samples, limit: int, levels: int = 255):
    """TensorsData (MinMax-style ranges) chosen by minimum quantization MSE, from two streamed passes."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData

    names = _float_tensors(model)
    session = make_session(with_outputs(model, names))
    inputs = [i.name for i in session.get_inputs()]
    batch = batch_size(model)
    low = {n: 0.0 for n in names}
    high = {n: 0.0 for n in names}
    for values in (session.run(names, dict(zip(inputs, b))) for b in samples.batches(batch, limit)):
        for name, value in zip(names, values):
            low[name] = min(low[name], float(np.min(value)))
            high[name] = max(high[name], float(np.max(value)))
    hists = {n: np.zeros(BINS) for n in names}
    for values in (session.run(names, dict(zip(inputs, b))) for b in samples.batches(batch, limit)):
        for name, value in zip(names, values):
            if high[name] > low[name]:
                hists[name] += np.histogram(value, BINS, (low[name], high[name]))[0]
    data = {}
    for name in names:
        a, b = _best_range(hists[name], low[name], high[name], levels) if high[name] > low[name] else (
            low[name], high[name])
        data[name] = (np.array(a, np.float32), np.array(b, np.float32))
    return TensorsData(CalibrationMethod.MinMax, data)


def ort_ranges(path: Path, samples, method: str, limit: int, batch: int, symmetric: bool):
    """TensorsData from onnxruntime's calibrator for ``method`` (minmax, entropy, percentile)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    kind = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]
    calibrator = create_calibrator(path, None, augmented_model_path=str(path.with_suffix(".aug.onnx")),
                                   calibrate_method=kind, extra_options={"symmetric": symmetric})
    names = [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
    total = min(limit, len(samples))
    step = max(CHUNK_SAMPLES, batch)
    for start in range(0, total, step):  # onnxruntime keeps every activation of what one call sees: feed chunks
        calibrator.collect_data(_Reader(samples.subset(start, min(start + step, total)), names, batch, step))
    return calibrator.compute_data()


def quantized_nodes(proto: onnx.ModelProto) -> set[str]:
    """Names of nodes that run quantized: Conv/Gemm/MatMul whose weight is dequantized from int8, other ops whose
    float inputs all come dequantized and whose output is quantized again (an excluded node may still receive
    rounded activations from a quantized producer: that alone does not make it quantized)."""
    dq_outputs = {o for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    q_inputs = {n.input[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    constants = {t.name for t in proto.graph.initializer}
    found = set()
    for node in proto.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if node.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose"):
            if len(node.input) > 1 and node.input[1] in dq_outputs:
                found.add(node.name)
        elif all(i in dq_outputs or i in constants or not i for i in node.input) \
                and any(i in dq_outputs for i in node.input) and any(o in q_inputs for o in node.output):
            found.add(node.name)
    return found


class Int8Quantizer:
    """Calibrates once, then produces QDQ models with any set of nodes left in float.

    Args:
        model: the float IR (after equalization, if any).
        samples: calibration samples.
        spec: the profile's QuantizationSpec.
        method: activation range method (minmax, entropy, percentile, mse).
        bias_correction: pre-compensate the bias of quantized layers.
        limit: calibration samples used at most.

    ``rounding``: node name -> (weight, bias) from ``quantizers.rounding.AdaptiveRounding``, substituted in every layer
    being quantized (None: nearest rounding).
    """

    rounding: dict | None = None

    def __init__(self, model: ir.Model, samples, spec, method: str, bias_correction: bool, limit: int = 256):
        self.model, self.spec, self.method, self.bias_correction = model, spec, method, bias_correction
        self._dir = tempfile.TemporaryDirectory(prefix="edgec-int8-")
        self.path = Path(self._dir.name) / "float.onnx"
        edgec_ir.save(model, self.path)
        self.float_ops = set(spec.float_ops)
        self.keep_float = float_scope(model)  # node name -> why it stays float whatever the guard does
        self.groups = op_groups(model, self.quantizable_ops(), self.keep_float)  # "ops:Add" -> node names
        self._kinds = {n.name: n.op_type for n in model.graph}
        self.followers = activation_followers(model)  # Conv -> the Relu/Clip that goes float or int8 with it
        self._full, self._variants = None, None
        try:
            self.ranges = self._calibrate(samples, limit)
        except Exception as exc:  # onnxruntime's calibrators raise untyped errors; name the model and step
            raise CompileError(f"int8 calibration ({method}) failed: {type(exc).__name__}: {exc}") from exc
        self.means = input_means(model, samples) if bias_correction else {}
        self.cache = Path(self._dir.name) / "ranges.json"
        from onnxruntime.quantization.calibrate import save_tensors_data

        save_tensors_data(self.ranges, self.cache)

    def _calibrate(self, samples, limit: int):
        if self.method == "mse":
            levels = 255 if not self.spec.reduce_range else 127
            return mse_ranges(self.model, samples, limit, levels)
        return ort_ranges(self.path, samples, self.method, limit, batch_size(self.model),
                          self.spec.symmetric_activations)

    def settings(self) -> dict:
        s = self.spec
        return {"format": "QDQ", "activation_dtype": s.activation_dtype, "weight_dtype": s.weight_dtype,
                "per_channel": s.per_channel, "reduce_range": s.reduce_range,
                "symmetric_activations": s.symmetric_activations, "calibration_method": self.method,
                "bias_correction": self.bias_correction, "float_ops": sorted(self.float_ops)}

    def quantizable_ops(self) -> set[str]:
        """The op types the quantizer takes (onnxruntime's QDQ and QLinear kernels, less ``float_ops``)."""
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        return (set(QDQRegistry) | set(QLinearOpsRegistry)) - self.float_ops

    def _op_types(self) -> list[str] | None:
        return sorted(self.quantizable_ops()) if self.float_ops else None

    def quantize(self, exclude=(), only=None, exact: bool = False) -> onnx.ModelProto:
        """A QDQ model with the nodes ``exclude`` in float (or only the nodes ``only`` quantized). Variants of the
        fully quantized model are derived from it (``quantizers.derive``) unless ``exact``: then onnxruntime's
        quantizer makes this one. A weighted layer's activation follower (``scope.activation_followers``) goes
        with it."""
        exclude = self._with_followers(expand(exclude, self.groups)) | set(self.keep_float)
        only = None if only is None else self._with_followers(expand(only, self.groups)) - set(self.keep_float)
        if exact:
            return self._quantize(exclude, only)
        if self._full is None:
            self._full = self._quantize(set(self.keep_float), None)
            self._variants = VariantMaker(self._full, self.model)
        if only is None and exclude == set(self.keep_float):
            full = onnx.ModelProto()
            full.CopyFrom(self._full)
            return full
        ops = self.quantizable_ops() | set(WEIGHTED_OPS)
        return self._variants.derive(lambda name: self._kinds.get(name) in ops and name not in exclude
                                     and (only is None or name in only))

    def _with_followers(self, names: set[str]) -> set[str]:
        return names | {self.followers[n] for n in names if n in self.followers}

    def _quantize(self, exclude: set[str], only: set[str] | None) -> onnx.ModelProto:
        """onnxruntime's quantizer on the float model (bias-corrected for the layers it quantizes)."""
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        source = self.path
        if self.bias_correction or self.rounding:
            from edgec.compiler.quantizers.rounding import apply_rounding

            model = edgec_ir.from_proto(edgec_ir.to_proto(self.model))
            skip = set(exclude) if only is None else {n.name for n in model.graph} - set(only)
            apply_rounding(model, self.rounding or {}, skip)
            if self.bias_correction:  # a no-op on the rounded layers: their weights are on the grid already
                CorrectBias(self.means, skip, self.spec.per_channel, self.spec.weight_dtype,
                            self.spec.reduce_range)(model)
            source = Path(self._dir.name) / "corrected.onnx"
            edgec_ir.save(model, source)
        out = Path(self._dir.name) / "int8.onnx"
        qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
        try:
            quantize_static(str(source), str(out), None, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=self._op_types(), per_channel=self.spec.per_channel,
                            reduce_range=self.spec.reduce_range, activation_type=qtype[self.spec.activation_dtype],
                            weight_type=qtype[self.spec.weight_dtype], nodes_to_exclude=sorted(exclude),
                            nodes_to_quantize=sorted(only) if only is not None else None,
                            calibrate_method=self.ranges.calibration_method, calibration_cache_path=str(self.cache),
                            extra_options={"ActivationSymmetric": self.spec.symmetric_activations,
                                           "QDQKeepRemovableActivations": KEEP_ACTIVATIONS,
                                           "WeightSymmetric": self.spec.symmetric_weights})
        except Exception as exc:  # never let the quantizer's own crash become the user's traceback
            raise CompileError(f"onnxruntime int8 quantization failed: {type(exc).__name__}: {exc}") from exc
        return onnx.load(str(out))
