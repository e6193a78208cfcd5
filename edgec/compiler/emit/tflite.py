"""TFLite emitter: ``model.tflite`` (fp32, fp16 weights, full-integer int8, dynamic-range), run with LiteRT.

Keras sources (``keras``, ``keras-h5``, ``savedmodel``) go straight through ``tf.lite.TFLiteConverter`` from the
Keras model. PyTorch and ONNX sources go through onnx2tf from the FLOAT IR (never a QDQ model: onnx2tf garbles
those silently); quantization then happens inside the TFLite conversion, calibrated on the same ``--calibration``
samples as ONNX INT8, transposed to the TFLite layout.

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


def _accuracy(evaluator, emitted, measured_on: str, budget: float) -> dict:
    """Measure the emitted model and judge it by its evidence (``quantize_evidence.decide``)."""
    from edgec.compiler.stages.quantize_evidence import decide

    if evaluator is None:
        return {"summary": f"accuracy not measured ({measured_on})", "measured": False}
    result = evaluator.measure(lambda inputs: emitted.from_model(emitted.runner(emitted.to_model(inputs))))
    evidence = decide(result, budget)
    summary = (f"{evaluator.summary(result)}; budget {budget:g} points; measured on {measured_on}; "
               f"{evidence['verdict']}: {evidence['why']}")
    return {"summary": summary, "measured": True, "budget": budget, **result, "evidence": evidence}


def _refuse(accuracy: dict, tried: list[str]) -> None:
    evidence = accuracy["evidence"]
    low, high = evidence["interval"]
    raise AccuracyBudgetError(
        f"TFLite int8 over --max-accuracy-drop {evidence['budget']:g}: {evidence['measure']} "
        f"{evidence['estimate']:.2f} points, 95% interval [{low:.2f}, {high:.2f}] on {evidence['samples']} samples; "
        f"tried: {'; '.join(tried)}; use --format onnx (its guard keeps single layers in float), more "
        "representative --calibration data, --max-accuracy-drop, or --quantize none")


def _select(tf_model, io, calibration, io_dtype, evaluator, measured_on, budget, emitted, path, profile, state):
    """(accuracy, float op types, emitted): full int8 first; over budget, op types go float cheapest first."""
    from edgec.compiler.emit._tflite_select import float_op_steps

    accuracy = _accuracy(evaluator, emitted, measured_on, budget)
    tried = [f"full int8: {accuracy.get('evidence', {}).get('estimate', 0):.2f}"]
    if not accuracy["measured"] or accuracy["evidence"]["accept"]:
        return accuracy, (), emitted
    float_ops: tuple[str, ...] = ()  # a model of one weighted op type has no step: its refusal still needs this
    for float_ops, share in float_op_steps(state.float_model):
        path.write_bytes(_tflite_file(tf_model, io, "int8", calibration, io_dtype, float_ops))
        emitted = _tflite_io.wrap(path, io, tf_model.input_perms, tf_model.output_perms, profile.threads)
        accuracy = _accuracy(evaluator, emitted, measured_on, budget)
        tried.append(f"{'+'.join(float_ops)} in float ({share:.1%} of weights): "
                     f"{accuracy['evidence']['estimate']:.2f}")
        if accuracy["evidence"]["accept"]:
            return accuracy, float_ops, emitted
    if accuracy["evidence"]["verdict"] == "exceeds":
        _refuse(accuracy, tried)
    return accuracy, float_ops, emitted


def _samples(calibration, perms: list[list[int]]):
    """Calibration samples in the model's layout, batch of one each, float32."""
    for batch in calibration.batches(size=1, limit=MAX_CALIBRATION_SAMPLES):
        yield [np.ascontiguousarray(a.transpose(p), dtype=np.float32) for a, p in zip(batch, perms)]


def _tflite_file(tf_model: _TFModel, io: dict, variant: str, calibration, io_dtype: str,
                 float_ops: tuple[str, ...] = ()) -> bytes:
    inputs = [{"name": _tflite_io.tf_name(i["name"]), "shape": s, "dtype": i["dtype"]}
              for i, s in zip(io["inputs"], tf_model.input_shapes)]
    function = tfl.serving_function(tf_model.call, inputs, [_tflite_io.tf_name(o["name"]) for o in io["outputs"]],
                                    tf_model.model)
    samples = _samples(calibration, tf_model.input_perms) if variant == "int8" else None
    return tfl.convert_function(function, variant, [i["name"] for i in inputs], samples, io_dtype, float_ops)


def _pinned(ir_io: dict, model_io: dict) -> list[str]:
    """``x Nx3xHxW -> 1x640x640x3`` for every IR input with dynamic dimensions, as the TFLite model fixed it."""
    fixed = {entry["name"]: entry["shape"] for entry in model_io["inputs"]}
    return [f"{meta['name']} {'x'.join('N' if d is None else str(d) for d in meta['shape'])} -> "
            f"{'x'.join(map(str, fixed.get(meta['name'], [])))}"
            for meta in ir_io["inputs"] if meta["shape"] and None in meta["shape"]]


def emit_tflite(model, source, bundle_dir: Path, profile, options, state) -> EmittedModel:
    io = edgec_ir.io_signature(model, source.layouts)
    precision, explicit = requested_precision(options, profile, state)
    calibration = state.calibration if precision not in ("none", "fp16") else None
    variant, notes = choose_variant(precision, explicit, calibration is not None, profile)
    evaluator, measured_on = None, "float variant: not measured"
    if variant == "int8":
        calibration, evaluator, measured_on = _evaluation(state, calibration)
    tf_model = _tf_model(model, source, options, io, state)
    io_dtype = profile.quantization.tflite_io_dtype if variant == "int8" else "float32"
    path = bundle_dir / "model.tflite"
    path.write_bytes(_tflite_file(tf_model, io, variant, calibration, io_dtype))
    try:
        emitted = _tflite_io.wrap(path, io, tf_model.input_perms, tf_model.output_perms, profile.threads)
    except BundleError as exc:  # a converted model the runtime refuses is a failed conversion (--format auto falls back)
        reason = str(exc).replace(f"{path}: ", "")
        raise CompileError(f"the converted {variant} TFLite model does not load: {reason}; "
                           "use --format onnx or another --quantize") from exc
    budget = state.budget
    float_ops: tuple[str, ...] = ()
    if variant == "int8":
        accuracy, float_ops, emitted = _select(tf_model, io, calibration, io_dtype, evaluator, measured_on, budget,
                                               emitted, path, profile, state)
        full = state.calibration
        if full is not None and calibration is not None and len(full) > len(calibration):
            path.write_bytes(_tflite_file(tf_model, io, variant, full, io_dtype, float_ops))  # calibrate on all
            emitted = _tflite_io.wrap(path, io, tf_model.input_perms, tf_model.output_perms, profile.threads)
    emitted.settings = {"variant": variant, "io_dtype": io_dtype, "converter": tf_model.converter,
                        "threads": profile.threads}
    emitted.notes = [*tf_model.notes, *notes]
    emitted.quantized = state.quantized or variant != "fp32"
    state.quantized = emitted.quantized
    state.report["tflite"] = {
        "variant": variant, "precision_requested": precision, "converter": tf_model.converter, "io_dtype": io_dtype,
        "calibration_samples": min(len(calibration), MAX_CALIBRATION_SAMPLES) if variant == "int8" else 0,
        "agreement_with_float": _tflite_io.agreement(state.float_model, emitted, state.input_sets,
                                                     [o["name"] for o in io["outputs"]]),
    }
    pinned = _pinned(io, emitted.io)
    if pinned:
        state.report["tflite"]["pinned"] = pinned
        emitted.notes.append(f"TFLite has fixed shapes: dynamic dimensions pinned ({'; '.join(pinned)})")
    if variant == "int8":
        state.report["tflite"]["float_ops"] = list(float_ops)
        state.report["accuracy"] = accuracy
        emitted.notes.append(accuracy["summary"])
        if float_ops:
            emitted.notes.append(f"selective int8: {', '.join(float_ops)} kept in float (quantization debugger "
                                 "deny-list) to meet the accuracy budget")
    return emitted
