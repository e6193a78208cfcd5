"""TFLite emitter: ``model.tflite`` (fp32, fp16 weights, full-integer int8, dynamic-range), run with LiteRT.

Keras sources (``keras``, ``keras-h5``, ``savedmodel``) go straight through ``tf.lite.TFLiteConverter`` from the
Keras model. PyTorch and ONNX sources go through onnx2tf from the FLOAT IR (never a QDQ model: onnx2tf garbles
those silently); quantization then happens inside the TFLite conversion, calibrated on the same ``--calibration``
samples as ONNX INT8, transposed to the TFLite layout. int8 is guarded like ONNX int8: the model is calibrated once
and re-quantized with single ops kept float where the accuracy guard's measurements say (``_tflite_select``).

Layout: onnx2tf makes rank >= 3 tensors channels-last (NCHW -> NHWC). The bundle's io signature describes the
TFLite model (its shapes, dtype, layout, the permutation from the source layout, int8 scale/zero point), and
``to_model``/``from_model`` convert IR-layout float arrays to the model's and back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgec import ir as edgec_ir
from edgec.compiler.emit import EmittedModel, _tflite_io
from edgec.compiler.emit import _tflite_convert as tfl
from edgec.errors import AccuracyBudgetError, BundleError, CompileError, UsageError

__all__ = ["KERAS_KINDS", "choose_variant", "emit_tflite", "requested_precision"]

KERAS_KINDS = ("keras", "keras-h5", "savedmodel")
# At most this many calibration samples feed the TFLite calibrator (it runs the float model once per sample).
MAX_CALIBRATION_SAMPLES = 256


def requested_precision(options, profile, state) -> tuple[str, bool]:
    """(precision, explicitly asked for). The quantization stage's ``state.precision`` wins once it exists;
    until then ``--quantize``, else the profile's default."""
    if state.precision:
        return state.precision, options.quantize is not None
    if options.quantize is not None:
        return options.quantize, True
    return profile.quantization.default, False


def choose_variant(precision: str, explicit: bool, has_calibration: bool, profile) -> tuple[str, list[str]]:
    """The TFLite variant for a precision; notes say why when it differs from what was asked."""
    where = f"{profile.source_file}" if getattr(profile, "source_file", None) else f"profile {profile.name}"
    if precision in ("none", "fp32"):
        return "fp32", []
    if precision == "fp16":
        return "fp16", []
    if precision == "int4":
        raise UsageError("--quantize int4: TFLite bundles have no int4 weight-only kernels here; use --format onnx "
                         "for int4, or --quantize int8")
    if has_calibration:
        return "int8", []
    if profile.quantization.dynamic_range_ok:
        return "dynamic", [f"no --calibration data: dynamic-range int8 (weights only), allowed by "
                           f"quantization.dynamic_range_ok in {where}"]
    if explicit and precision == "int8":
        raise UsageError(f"--quantize int8 for TFLite needs --calibration samples (a .npz named after the inputs); "
                         f"dynamic-range int8 is off for {profile.name} (quantization.dynamic_range_ok = false in "
                         f"{where}: slower than fp32 on conv nets)")
    return "fp32", [f"precision {precision!r} needs --calibration samples for TFLite; none given, emitted fp32"]


@dataclass
class _TFModel:
    """A TensorFlow-callable model and how its tensors relate to the IR's."""

    call: object  # list of tensors (model layout, IR input order) -> outputs in IR output order
    model: object  # the TensorFlow object holding the variables ``call`` uses
    input_shapes: list[list[int]]  # model layout, IR input order
    input_perms: list[list[int]]  # IR layout -> model layout
    output_perms: list[list[int]]
    notes: list[str] = field(default_factory=list)
    converter: str = "tf.lite.TFLiteConverter"


def _fixed_shape(meta: dict, example: list[int] | None) -> list[int]:
    shape = list(meta["shape"] or [])
    return [1 if axis == 0 and d is None else (d if d is not None else (example or shape)[axis])
            for axis, d in enumerate(shape)]


def _keras_model(source, io: dict) -> _TFModel:
    model = source.framework_model
    if source.kind == "savedmodel":
        signature = model.signatures["serving_default"]
        names = [i["name"] for i in io["inputs"]]
        outs = sorted(signature.structured_outputs)

        def call(args):
            result = signature(**dict(zip(names, args)))
            return [result[o] for o in outs]
    else:
        def call(args):
            return model(args if len(args) > 1 else args[0], training=False)

    shapes = [_fixed_shape(i, source.example_shapes.get(i["name"])) for i in io["inputs"]]
    identity = [list(range(len(s))) for s in shapes]
    out_ranks = [len(o["shape"] or []) for o in io["outputs"]]
    return _TFModel(call, model, shapes, identity, [list(range(r)) for r in out_ranks],
                    notes=["Keras model converted directly with tf.lite.TFLiteConverter (batch fixed to 1)"])


def _onnx2tf_model(model, source, options, io: dict) -> _TFModel:
    from edgec.compiler.emit import _onnx2tf

    prepared, notes = _onnx2tf.prepare(edgec_ir.to_proto(model), source.example_shapes, options.seed)
    # Inputs already channels-last (a Keras source whose IR a stage changed) stay as they are.
    keep = [i["name"] for i in io["inputs"] if i["layout"] in ("NWC", "NHWC", "NDHWC")]
    keras_model = _onnx2tf.onnx_to_keras(prepared, seed=options.seed, keep_channels_last=keep)
    input_perms, output_perms = _onnx2tf.permutations(keras_model, prepared, options.seed, keep)
    shapes = [[int(d) for d in t.shape] for t in keras_model.inputs]

    def call(args):
        return keras_model(args if len(args) > 1 else args[0], training=False)

    return _TFModel(call, keras_model, shapes, input_perms, output_perms,
                    notes=[*notes, "converted with onnx2tf from the float ONNX (never a QDQ model)"],
                    converter="onnx2tf + tf.lite.TFLiteConverter")


def _tf_model(model, source, options, io: dict, state) -> _TFModel:
    """Keras sources convert from the Keras model, unless a stage (pruning, ...) changed the IR: then the changed
    IR is what must ship, and it goes through onnx2tf like every other source."""
    if source.kind not in KERAS_KINDS:
        return _onnx2tf_model(model, source, options, io)
    if model is state.float_model:
        return _keras_model(source, io)
    tf_model = _onnx2tf_model(model, source, options, io)
    tf_model.notes.insert(0, "a compile stage changed the Keras model's IR: converted from that IR with onnx2tf")
    return tf_model


def _evaluation(state, samples):
    """(calibration part, Evaluator or None, what it measures on): labelled --eval-data, else held-out
    calibration samples, exactly as the ONNX quantization stage splits them."""
    from edgec.compiler import verify
    from edgec.compiler.accuracy import Evaluator

    options = state.options
    reference = verify.ir_runner(state.float_model, "float IR")
    if options.eval_data:
        return samples, Evaluator(reference, state.eval_set(), 1), f"labelled evaluation data {options.eval_data}"
    if samples is None or len(samples) < 2:
        return samples, None, "no --eval-data and too few calibration samples to hold some out: not measured"
    calib, held = samples.random_split(0.5, options.seed)
    held = held.subset(0, min(len(held), MAX_CALIBRATION_SAMPLES))
    return calib, Evaluator(reference, held, 1), (
        f"{len(held)} calibration samples held out at random (seed {options.seed}) from a model calibrated on the "
        f"other {len(calib)}; the final model is calibrated on all {len(samples)}")


def _refused(exc: AccuracyBudgetError) -> AccuracyBudgetError:
    error = AccuracyBudgetError(f"TFLite int8 over the budget: {exc}; or use --format onnx")
    error.table = getattr(exc, "table", None)
    return error


def _guard(requantizer, evaluator, budget: float, profile, runner):
    """The accuracy guard over the TFLite model's weighted ops and weightless op types (``_tflite_select``)."""
    from edgec.compiler.stages.quantize import ALWAYS_MEASURE_LAYERS
    from edgec.compiler.stages.quantize_cost import costs_from_figures
    from edgec.compiler.stages.quantize_guard import run_guard

    candidates = [op.label for op in requantizer.weighted] + list(requantizer.groups)
    totals = (sum(op.macs for op in requantizer.weighted), sum(op.params for op in requantizer.weighted))
    costs = costs_from_figures(requantizer.figures(), candidates, profile, totals)
    try:
        return run_guard(requantizer, evaluator, candidates, budget, always_measure=len(candidates) <=
                         ALWAYS_MEASURE_LAYERS, costs=costs, cheap=True, runner=runner)
    except AccuracyBudgetError as exc:
        raise _refused(exc) from None


def _layer_rows(requantizer, result, budget: float) -> list[dict]:
    """A row per weighted TFLite op, and per weightless op type the guard kept float: precision, sensitivity,
    cost and why (the ONNX report's schema; a group's row lists its tensors)."""
    from edgec.compiler.stages.quantize import guard_reason

    rows = []
    groups = [group for label, group in requantizer.groups.items() if label in result.excluded]
    for op in [*requantizer.weighted, *groups]:
        sens, cost = result.sensitivity.get(op.label), result.costs.get(op.label)
        row = {"node": op.label, ("group" if isinstance(op.name, list) else "tensor"): op.name, "op": op.op,
               "precision": "float32" if op.label in result.excluded else "int8",
               "sensitivity": None if sens is None else {k: sens[k] for k in ("drop", "rel_error", "sqnr_db",
                                                                              "noise")}}
        if cost:
            row["cost"] = {k: cost[k] for k in ("bytes", "size_share", "time_share")}
        if op.label in result.excluded:
            row["reason"] = guard_reason(op.label in result.cheap, sens, cost, budget)
        else:
            row["reason"] = "quantized" + ("" if result.measured is None else "; the accuracy budget holds")
        rows.append(row)
    return rows


def _samples(calibration, perms: list[list[int]]):
    """Calibration samples in the model's layout, batch of one each, float32."""
    for batch in calibration.batches(size=1, limit=MAX_CALIBRATION_SAMPLES):
        yield [np.ascontiguousarray(a.transpose(p), dtype=np.float32) for a, p in zip(batch, perms)]


def _function(tf_model: _TFModel, io: dict):
    inputs = [{"name": _tflite_io.tf_name(i["name"]), "shape": s, "dtype": i["dtype"]}
              for i, s in zip(io["inputs"], tf_model.input_shapes)]
    function = tfl.serving_function(tf_model.call, inputs, [_tflite_io.tf_name(o["name"]) for o in io["outputs"]],
                                    tf_model.model)
    return function, [i["name"] for i in inputs]


def _tflite_file(tf_model: _TFModel, io: dict, variant: str) -> bytes:
    """A float variant (fp32, fp16, dynamic)."""
    function, names = _function(tf_model, io)
    return tfl.convert_function(function, variant, names)


def _requantizer(tf_model: _TFModel, io: dict, calibration, io_dtype: str):
    from edgec.compiler.emit._tflite_select import Requantizer

    function, names = _function(tf_model, io)
    return Requantizer(tfl.calibrate(function, names, _samples(calibration, tf_model.input_perms)), io_dtype)


def _pinned(ir_io: dict, model_io: dict) -> list[str]:
    """``x Nx3xHxW -> 1x640x640x3`` for every IR input with dynamic dimensions, as the TFLite model fixed it."""
    fixed = {entry["name"]: entry["shape"] for entry in model_io["inputs"]}
    return [f"{meta['name']} {'x'.join('N' if d is None else str(d) for d in meta['shape'])} -> "
            f"{'x'.join(map(str, fixed.get(meta['name'], [])))}"
            for meta in ir_io["inputs"] if meta["shape"] and None in meta["shape"]]


def _wrap(path: Path, content: bytes, io: dict, tf_model: _TFModel, profile, variant: str) -> EmittedModel:
    path.write_bytes(content)
    try:
        return _tflite_io.wrap(path, io, tf_model.input_perms, tf_model.output_perms, profile.threads)
    except BundleError as exc:  # a converted model the runtime refuses is a failed conversion (--format auto falls back)
        reason = str(exc).replace(f"{path}: ", "")
        raise CompileError(f"the converted {variant} TFLite model does not load: {reason}; "
                           "use --format onnx or another --quantize") from exc


def _int8(tf_model, io, calibration, evaluator, measured_on, path, profile, state):
    """(emitted, guard result or None, requantizer, accuracy report): the guarded int8 model, calibrated on all
    the samples."""
    from edgec.compiler.stages.quantize import accuracy_report

    requantizer = _requantizer(tf_model, io, calibration, profile.quantization.tflite_io_dtype)
    result = None
    if evaluator is not None:
        def runner(content, _threads=0):
            model = _wrap(path, content, io, tf_model, profile, "int8")
            return lambda inputs: model.from_model(model.runner(model.to_model(inputs)))

        result = _guard(requantizer, evaluator, state.budget, profile, runner)
    excluded = result.excluded if result is not None else []
    full = state.calibration
    if full is not None and len(full) > len(calibration):  # the guard measured on part: calibrate on all now
        requantizer = _requantizer(tf_model, io, full, requantizer.io_dtype)
        missing = [label for label in excluded if label not in requantizer.names]
        if missing:
            raise CompileError(f"TFLite op {missing[0]} chosen to stay float is gone after calibrating again; "
                               "use --format onnx")
        content = requantizer.quantize(exclude=excluded)
    else:  # the guard's chosen model is the final one
        content = result.proto if result is not None else requantizer.quantize()
    emitted = _wrap(path, content, io, tf_model, profile, "int8")
    accuracy = (accuracy_report(evaluator, result, state.budget, measured_on) if result is not None
                else {"summary": f"accuracy not measured ({measured_on})", "measured": False})
    return emitted, result, requantizer, accuracy


def emit_tflite(model, source, bundle_dir: Path, profile, options, state) -> EmittedModel:
    io = edgec_ir.io_signature(model, source.layouts)
    precision, explicit = requested_precision(options, profile, state)
    calibration = state.calibration if precision not in ("none", "fp16") else None
    variant, notes = choose_variant(precision, explicit, calibration is not None, profile)
    tf_model = _tf_model(model, source, options, io, state)
    io_dtype = profile.quantization.tflite_io_dtype if variant == "int8" else "float32"
    path = bundle_dir / "model.tflite"
    if variant == "int8":
        calibration, evaluator, measured_on = _evaluation(state, calibration)
        emitted, result, requantizer, accuracy = _int8(tf_model, io, calibration, evaluator, measured_on, path,
                                                       profile, state)
    else:
        emitted = _wrap(path, _tflite_file(tf_model, io, variant), io, tf_model, profile, variant)
    emitted.settings = {"variant": variant, "io_dtype": io_dtype, "converter": tf_model.converter,
                        "threads": profile.threads}
    emitted.notes = [*tf_model.notes, *notes]
    emitted.quantized = state.quantized or variant != "fp32"
    state.quantized = emitted.quantized
    state.report["tflite"] = {
        "variant": variant, "precision_requested": precision, "converter": tf_model.converter, "io_dtype": io_dtype,
        "calibration_samples": min(len(state.calibration), MAX_CALIBRATION_SAMPLES) if variant == "int8" else 0,
        "agreement_with_float": _tflite_io.agreement(state.float_model, emitted, state.input_sets,
                                                     [o["name"] for o in io["outputs"]]),
    }
    pinned = _pinned(io, emitted.io)
    if pinned:
        state.report["tflite"]["pinned"] = pinned
        emitted.notes.append(f"TFLite has fixed shapes: dynamic dimensions pinned ({'; '.join(pinned)})")
    if variant == "int8":
        _int8_report(state, emitted, requantizer, result, accuracy)
    return emitted


def _int8_report(state, emitted, requantizer, result, accuracy) -> None:
    """The guard's evidence and per-op table where the ONNX path puts them (report, --explain, HTML)."""
    from edgec.compiler.stages.quantize import guard_notes

    budget = state.budget
    rows = _layer_rows(requantizer, result, budget) if result is not None else []
    floats = [row for row in rows if row["precision"] == "float32"]
    state.report["tflite"]["float_ops"] = [row["node"] for row in floats]
    state.report.setdefault("quantization", {})["nodes"] = rows
    state.report["accuracy"] = accuracy
    emitted.notes.extend(guard_notes(accuracy, rows) if result is not None else [accuracy["summary"]])
    if floats:
        emitted.notes.append(f"selective int8: kept in float by the accuracy guard: "
                             f"{', '.join(row['node'] for row in floats)} ({len(floats)} of {len(rows)} weighted ops "
                             "and op types)")
