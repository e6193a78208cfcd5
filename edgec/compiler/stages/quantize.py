"""The quantization stage: resolve the precision, calibrate, quantize, guard the accuracy, report every layer.

``apply(model, source, profile, options, state)`` (``state``: the ``CompileState``):

* precision from ``--quantize`` or the profile (``stages/quantize_policy.py``);
* calibration samples from ``state.calibration`` or ``--calibration`` (``edgec.compiler.calibration``);
* ``--format tflite``: no QDQ ONNX (onnx2tf garbles it). The stage records ``state.precision`` (none, fp16,
  int8) and ``state.calibration`` (the CalibrationSet, or None) and leaves quantization to the TFLite
  emitter, which can measure its result with ``edgec.compiler.accuracy.Evaluator``;
* int8: cross-layer equalization + bias absorption, calibration (profile or ``--calibration-method``), bias
  correction, onnxruntime QDQ; without explicit options, equalization/bias correction and the activation range
  method (profile's or ``mse``) are each kept by the held-out output noise (``_best_tools``); int4: Gemm -> MatMul+Add, MatMulNBits; fp16: float16 with float32 I/O;
* the accuracy guard (``stages/quantize_guard.py``) keeps float the layers worth their cost
  (``stages/quantize_select.py``), then returns sensitive layers to float until ``--max-accuracy-drop`` holds.

The report gets ``quantization`` (precision, reason, settings, a row per quantizable node: precision chosen,
sensitivity, reason) and ``accuracy`` (summary line, scores, what the guard tried).
"""

from __future__ import annotations

import logging

import onnx_ir as ir

from edgec import ir as edgec_ir
from edgec.compiler.calibration import load_samples, warn_if_few
from edgec.compiler.passes import const
from edgec.compiler.quantizers.common import batch_size, compact_proto, weighted_nodes
from edgec.compiler.stages.quantize_guard import run_guard
from edgec.compiler.stages.quantize_policy import isa_requirements, resolve_precision
from edgec.compiler.stages.quantize_select import WORTH, sensitivity_groups
from edgec.compiler.state import pass_record as _record
from edgec.errors import CalibrationDataError, CompileError, UsageError

__all__ = ["accuracy_report", "apply", "guard_notes", "guard_reason"]

# Samples used at most for calibration and for measuring accuracy without labelled data.
CALIBRATION_LIMIT, HELD_OUT_LIMIT = 256, 256
# Activation range methods tried beside the profile's (kept by held-out output noise) unless --calibration-method.
RANGE_METHODS = ("mse",)  # percentile measured too on EfficientNet-Lite2: never better than mse there
# With this few layers, every layer's sensitivity is measured even when the budget holds (a full report).
ALWAYS_MEASURE_LAYERS = 12


def _name_nodes(model: ir.Model) -> None:
    """Give every node a unique name: the quantizers select and exclude nodes by name."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph):
        name = node.name or f"{node.op_type}_{index}"
        while name in seen:
            name += "_"
        node.name = name
        seen.add(name)


def _calibration(options, io: dict, state):
    samples = state.calibration
    if samples is None and options.calibration:
        samples = load_samples(options.calibration, io["inputs"], preprocess=options.preprocess)
    return samples


def _evaluator(model: ir.Model, samples, options, io: dict, split: bool):
    """(calibration part, Evaluator or None, note): labelled --eval-data, else held-out calibration samples.

    ``split``: the precision needs calibration, so the held-out samples are a seeded random half of the
    calibration data (the final model is calibrated on all of them); otherwise every sample measures.
    """
    from edgec.compiler.accuracy import Evaluator
    from edgec.compiler.quantizers.common import proto_runner

    reference = proto_runner(edgec_ir.to_proto(model))
    batch = batch_size(model)
    if options.eval_data:
        data = load_samples(options.eval_data, io["inputs"], need_labels=True, preprocess=options.preprocess)
        return samples, Evaluator(reference, data, batch), f"labelled evaluation data {options.eval_data}"
    if samples is None:
        return samples, None, "no --eval-data or --calibration data to measure it on"
    if not split:
        held = samples.subset(0, HELD_OUT_LIMIT)
        return samples, Evaluator(reference, held, batch), f"{len(held)} calibration samples"
    if len(samples) < 2:
        return samples, None, "no --eval-data and too few calibration samples to hold some out"
    calib, held = samples.random_split(0.5, options.seed)
    held = held.subset(0, HELD_OUT_LIMIT)
    return calib, Evaluator(reference, held, batch), (
        f"{len(held)} calibration samples held out at random (seed {options.seed}) from a model calibrated on "
        f"the other {len(calib)}; the final model is calibrated on all {len(samples)}")


def _reason(node, key: str, row: dict, result, spec, precision: str, budget: float, kept: dict) -> str:
    sens, cost = row["sensitivity"], row.get("cost")
    if node.name in kept:
        return f"kept float: {kept[node.name]}"
    if key in result.cheap or key in result.excluded:
        what = "alone it gives" if key == node.name else \
            f"quantized alone, the {len(row['group'])} {node.op_type} nodes give"
        return guard_reason(key in result.cheap, sens, cost, budget, what)
    if node.op_type in spec.float_ops:
        return f"kept float: quantization.float_ops lists {node.op_type} (slower quantized on the target)"
    if row["precision"] != "float32":
        return "quantized" + ("" if result.measured is None else "; the accuracy budget holds")
    return f"not quantized: no {precision} kernel for this op or its weights do not qualify"


def guard_reason(cheap: bool, sens: dict, cost: dict, budget: float, what: str = "alone it gives") -> str:
    """Why the accuracy guard left a layer in float (``cheap``: for its cost, whatever the budget), with its
    measured sensitivity (``what`` output SQNR) and what float costs."""
    figures = (f"{what} output SQNR {sens['sqnr_db']:.1f} dB (noise {sens['noise']:.2e}) for {cost['bytes']:,} "
               f"extra bytes and {cost['time_share']:.1%} of the time in float")
    if cheap:
        return (f"kept float for its cost by the accuracy guard: {figures}: noise share per cost share over "
                f"{WORTH:g}, and the measured output noise fell")
    return (f"returned to float by the accuracy guard: {figures}; among the best noise removed per cost to meet "
            f"--max-accuracy-drop {budget:g}")


def _node_rows(model: ir.Model, precision: str, chosen: dict, result, spec, budget: float,
               scope: tuple[dict, dict] = ({}, {})) -> list[dict]:
    """A row per weighted or quantized node, and per node kept float by structure or returned to float by
    the guard with its op-type group. ``scope``: (node -> why it stays float, op-type group -> nodes)."""
    kept, groups = scope
    group_of = {member: group for group, members in groups.items() for member in members}
    rows = []
    for node in model.graph:
        key = group_of.get(node.name, node.name)
        if node.name not in chosen and node.op_type not in ("Conv", "Gemm", "MatMul") and node.name not in kept \
                and key not in result.excluded:
            continue
        sens = result.sensitivity.get(key)
        row = {"node": node.name, "op": node.op_type, "precision": chosen.get(node.name, "float32"),
               "sensitivity": None if sens is None else {k: sens[k] for k in ("drop", "rel_error", "sqnr_db",
                                                                              "noise")}}
        if key != node.name:
            row["group"] = groups[key]
        if key in result.costs:
            row["cost"] = {k: result.costs[key][k] for k in ("bytes", "size_share", "time_share")}
        row["reason"] = _reason(node, key, row, result, spec, precision, budget, kept)
        rows.append(row)
    return rows


def _int8_quantizer(model, calib, spec, method, tools: tuple[bool, bool], records):
    """(work model, Int8Quantizer) with ``tools`` = (equalization, bias correction)."""
    from edgec.compiler.passes.equalize_layers import EqualizeLayers
    from edgec.compiler.quantizers.int8 import Int8Quantizer

    work = edgec_ir.from_proto(edgec_ir.to_proto(model))
    if tools[0]:
        cle = EqualizeLayers(calib, absorb_bias=spec.absorb_bias)
        cle(work)
        records.append(_record(cle.name, cle.settings(), cle.notes))
    quantizer = Int8Quantizer(work, calib, spec, method, tools[1], CALIBRATION_LIMIT)
    if spec.adaptive_rounding and spec.weight_dtype == "int8":
        from edgec.compiler.quantizers.rounding import AdaptiveRounding

        rounding = AdaptiveRounding(work, calib, spec.per_channel, spec.reduce_range)
        quantizer.rounding = rounding.replacements
        records.append(_record("round-weights", {"samples": min(len(calib), 16)},
                               [rounding.summary(), *(f"{r['node']}: held-out output error {r['nearest_error']:.3g} "
                                                      f"nearest, {r['adaptive_error']:.3g} adaptive: "
                                                      f"{'kept' if r['kept'] else 'nearest kept'}"
                                                      for r in rounding.rows)]))
    return work, quantizer


def _tool_options(tools: tuple[bool, bool]) -> list[tuple[bool, bool]]:
    """The profile's (equalization, bias correction), then each with fewer tools: (T, T) -> (F, T) -> (F, F)."""
    options = [tools]
    if tools[0] and tools[1]:
        options.append((False, True))
    if (False, False) not in options:
        options.append((False, False))
    return options


def _best_tools(tried: dict, tools: tuple[bool, bool]) -> tuple[bool, bool]:
    """The option with the lowest output noise (the continuous measure: it ranks on a few dozen samples), unless
    another one's drop estimate is decisively lower (its whole 95% interval below the noise-best one's estimate).
    The profile's option wins ties."""
    by_noise = min(tried, key=lambda k: (tried[k][0][1], k != tools))
    decisive = [k for k in tried if tried[k][4][1] < tried[by_noise][0][0]]
    return min(decisive, key=lambda k: (tried[k][0][0], k != tools)) if decisive else by_noise


def _choose_tools(model, calib, evaluator, spec, method, options, records):
    """Equalization and bias correction as the options or the profile say; when only the profile says and data
    can tell, each tool is kept only if it lowers the full-int8 model's measured output noise on the held-out
    samples (``_best_tools``), else undone. Bias correction alone is tried too (equalization can hurt where bias
    correction helps); it reuses the calibration of the unequalized model."""
    import copy

    from edgec.compiler.quantizers.common import proto_runner
    from edgec.compiler.stages.quantize_evidence import decide
    from edgec.compiler.stages.quantize_guard import SENSITIVITY_SAMPLES

    tools = (spec.equalize_layers if options.equalize is None else options.equalize,
             spec.bias_correction if options.bias_correction is None else options.bias_correction)
    explicit = options.equalize is not None or options.bias_correction is not None
    if evaluator is None or explicit or tools == (False, False):
        return (*_int8_quantizer(model, calib, spec, method, tools, records), tools, [])
    part = evaluator.subset(SENSITIVITY_SAMPLES)
    tried, plain = {}, None
    for option in _tool_options(tools):
        notes: list[dict] = []
        if option == (False, False) and plain is not None:  # same ranges, no bias correction
            work, quantizer = plain[0], copy.copy(plain[1])
            quantizer.bias_correction = False
        else:
            work, quantizer = _int8_quantizer(model, calib, spec, method, option, notes)
        if not option[0]:
            plain = (work, quantizer)
        measured = part.measure(proto_runner(quantizer.quantize(), unfused=True))  # the target's arithmetic
        evidence = decide(measured, 0.0)
        tried[option] = ((evidence["estimate"], measured["noise"]), work, quantizer, notes, evidence["interval"])
    best = _best_tools(tried, tools)
    _, work, quantizer, notes, _ = tried[best]
    records.extend(notes)
    range_line = ""
    if options.calibration_method is None:
        work, quantizer, range_line = _choose_ranges(model, calib, part, spec, best, tried[best])
    verdict = {tools: "kept", (False, False): "undone"}.get(best, "partly undone (bias correction only)")
    figures = "; ".join(f"equalization {k[0]}, bias correction {k[1]}: {v[0][0]:.2f} points (output noise "
                        f"{v[0][1]:.2e})" for k, v in tried.items())
    line = (f"equalization {tools[0]}, bias correction {tools[1]} (profile) {verdict}: full-int8 drop estimate "
            f"on {len(part.samples)} held-out samples with {figures}")
    return work, quantizer, best, [line] + ([range_line] if range_line else [])


def _choose_ranges(model, calib, part, spec, tools: tuple[bool, bool], chosen: tuple):
    """(work, quantizer, note): the activation range method with the lowest held-out output noise among the
    profile's and ``RANGE_METHODS`` (``mse`` chooses each tensor's clipping range by its measured quantization
    error), under the same rule as the tools (``_best_tools``)."""
    from edgec.compiler.quantizers.common import proto_runner
    from edgec.compiler.stages.quantize_evidence import decide

    default = chosen[2].method
    tried, failed = {default: chosen}, []
    for method in RANGE_METHODS:
        if method in tried:
            continue
        try:
            work, quantizer = _int8_quantizer(model, calib, spec, method, tools, [])
            measured = part.measure(proto_runner(quantizer.quantize(), unfused=True))
        except CompileError as exc:  # onnxruntime's calibrator cannot run this method on the graph (silero-vad's If)
            failed.append(f"{method}: not usable here ({' '.join(str(exc).split())[:160]})")
            continue
        evidence = decide(measured, 0.0)
        tried[method] = ((evidence["estimate"], measured["noise"]), work, quantizer, [], evidence["interval"])
    best = _best_tools(tried, default)
    figures = "; ".join([f"{k}: {v[0][0]:.2f} points (output noise {v[0][1]:.2e})" for k, v in tried.items()]
                        + failed)
    note = (f"activation ranges: {best} ({'the profile' if best == default else 'lower held-out output noise'}); "
            f"full-int8 drop estimate on {len(part.samples)} held-out samples with {figures}")
    return tried[best][1], tried[best][2], note


def _run_int8(model, samples, calib, evaluator, profile, method, budget, options, records):
    from edgec.compiler.quantizers.int8 import quantized_nodes
    from edgec.compiler.stages.quantize_cost import layer_costs

    spec = profile.quantization
    work, quantizer, tools, tool_notes = _choose_tools(model, calib, evaluator, spec, method, options, records)
    # Weighted layers one by one, and the weightless ops that compute new values one op type at a time.
    candidates = [n.name for n in weighted_nodes(work)
                  if n.op_type not in spec.float_ops and n.name not in quantizer.keep_float] + list(quantizer.groups)
    result = run_guard(quantizer, evaluator, candidates, budget,
                       always_measure=len(candidates) <= ALWAYS_MEASURE_LAYERS,
                       costs=layer_costs(work, profile, candidates, quantizer.groups),
                       groups=sensitivity_groups(work, candidates), cheap=True)
    method = quantizer.method  # the one measured best (or the option's / profile's)
    notes = [f"calibration: {method} over {min(len(calib), CALIBRATION_LIMIT)} samples"]
    if calib is not samples:  # the guard measured a model calibrated on part of the data: calibrate on all now
        work, quantizer = _int8_quantizer(model, samples, spec, method, tools, [])
    if result.excluded or calib is not samples:  # onnxruntime makes the final model (the guard's were derived)
        result.proto = quantizer.quantize(exclude=result.excluded, exact=True)
    if calib is not samples:
        notes = [f"calibration: {method} over {min(len(samples), CALIBRATION_LIMIT)} samples (all of them; the "
                 f"guard measured a model calibrated on {len(calib)})"]
    chosen = {name: "int8" for name in quantized_nodes(result.proto)}
    notes.insert(0, f"{len(chosen)} nodes run on int8 data; {len(result.excluded)} returned to float")
    notes.extend(tool_notes)
    notes.extend(result.notes)
    if quantizer.bias_correction:
        notes.append("bias correction applied to every quantized Conv/Gemm")
    records.append(_record("quantize-int8", quantizer.settings(), notes))
    return work, result, chosen, (quantizer.keep_float, quantizer.groups)


def _run_int4(model, evaluator, spec, budget, records):
    from edgec.compiler.passes.rewrite_gemm import RewriteGemm
    from edgec.compiler.quantizers.int4 import Int4Quantizer

    work = edgec_ir.from_proto(edgec_ir.to_proto(model))
    rewrite = RewriteGemm()
    rewrite(work)
    records.append(_record(rewrite.name, {}, rewrite.notes))
    quantizer = Int4Quantizer(work, spec)
    if not quantizer.candidates:
        raise UsageError(f"--quantize int4: the model has no MatMul/Gemm weight with at least "
                         f"{spec.int4_block_size} input rows (quantization.int4_block_size) to make int4; "
                         "use --quantize int8")
    result = run_guard(quantizer, evaluator, quantizer.candidates, budget,
                       always_measure=len(quantizer.candidates) <= ALWAYS_MEASURE_LAYERS)
    kept = set(result.excluded)
    chosen = {name: "int4" for name in quantizer.candidates if name not in kept}
    params = {n.name: const(n.inputs[1]).size for n in weighted_nodes(work)}
    made = sum(params[n] for n in chosen)
    notes = [f"{len(chosen)} of {len(params)} weight tensors became int4: {made:,} of {sum(params.values()):,} "
             f"weights ({made / max(sum(params.values()), 1):.1%})"]
    records.append(_record("quantize-int4", quantizer.settings(), notes))
    return work, result, chosen


def _run_fp16(model, evaluator, budget, records):
    from edgec.compiler.quantizers.fp16 import Fp16Converter

    converter = Fp16Converter(model)
    result = run_guard(converter, evaluator, converter.candidates, budget,
                       always_measure=len(converter.candidates) <= ALWAYS_MEASURE_LAYERS)
    kept = set(result.excluded)
    chosen = {name: "float16" for name in (n.name for n in model.graph) if name not in kept}
    records.append(_record("convert-fp16", converter.settings(), [f"{len(kept)} nodes kept in float32"]))
    return model, result, chosen


def apply(model: ir.Model, source, profile, options, state):
    """Quantize ``model`` as the profile and options say; see the module docstring."""
    logging.getLogger("onnxruntime").setLevel(logging.WARNING)
    spec = profile.quantization
    fmt = state.format  # the one the pipeline chose (measured tables, fallback): never recomputed here
    if state.source_quantized:
        return model, _keep_quantized(state.source_quantized, options, state)
    _name_nodes(model)
    io = edgec_ir.io_signature(model, source.layouts)
    samples = _calibration(options, io, state)
    state.calibration = samples
    precision, reason = resolve_precision(model, profile, options, fmt, samples is not None)
    state.precision = precision
    report = {"precision": precision, "reason": reason}
    if isa_requirements(profile, precision, fmt):
        report["requires"] = isa_requirements(profile, precision, fmt)
    state.report["quantization"] = report
    if precision == "none":
        return model, []
    method = options.calibration_method or spec.calibration_method
    budget = spec.max_accuracy_drop if options.max_accuracy_drop is None else options.max_accuracy_drop
    warning = warn_if_few(samples, method) if samples is not None and precision == "int8" else None
    if warning:
        report["warnings"] = [warning]
    if fmt != "onnx":
        report.update({"calibration_method": method, "max_accuracy_drop": budget,
                       "note": f"quantized by the {fmt} emitter from the float graph (QDQ ONNX does not convert)"})
        return model, [_record("quantize-deferred", {"precision": precision, "format": fmt}, [report["note"]], False)]
    if precision == "int8" and samples is not None:
        samples = samples.random_subset(CALIBRATION_LIMIT, options.seed)
    calib, evaluator, measured_on = _evaluator(model, samples, options, io, split=precision == "int8")
    if precision == "int8" and (calib is None or len(calib) == 0):
        raise CalibrationDataError(f"{options.calibration}: no calibration samples left after holding out "
                                   "samples for the accuracy measure; give more samples or --eval-data")
    records: list[dict] = []
    scope: tuple[dict, dict] = ({}, {})
    if precision == "int8":
        work, result, chosen, scope = _run_int8(model, samples, calib, evaluator, profile, method, budget,
                                                options, records)
    elif precision == "int4":
        work, result, chosen = _run_int4(model, evaluator, spec, budget, records)
    else:
        work, result, chosen = _run_fp16(model, evaluator, budget, records)
    report.update({"settings": records[-1]["settings"], "max_accuracy_drop": budget,
                   "nodes": _node_rows(work, precision, chosen, result, spec, budget, scope)})
    state.report["accuracy"] = accuracy_report(evaluator, result, budget, measured_on)
    records.append(_record("accuracy-guard", {"max_accuracy_drop": budget},
                           guard_notes(state.report["accuracy"], report["nodes"]), bool(result.excluded)))
    state.quantized = True
    return edgec_ir.from_proto(compact_proto(result.proto)), records


def _keep_quantized(found: str, options, state) -> list[dict]:
    """An already quantized source is never quantized again (that compounds the rounding and nothing could be
    verified against a float model): it is compiled as it is, and the report and console say so, also when
    ``--quantize`` asked for a precision."""
    note = f"the source model is already quantized ({found}): compiled as it is, not quantized again"
    if options.quantize not in (None, "none", "auto"):
        note += f"; --quantize {options.quantize} ignored"
    state.precision = "none"
    state.report["quantization"] = {"precision": "already quantized", "reason": note}
    return [_record("quantize-skipped", {"already_quantized": found}, [note], False)]


def guard_notes(accuracy: dict, rows: list[dict]) -> list[str]:
    """What ``--explain`` prints for the guard: the summary, each measurement with its evidence, the float layers."""
    notes = [accuracy["summary"]]
    for step in accuracy.get("tried", []):
        low, high = step["interval"]
        notes.append(f"step {step['step']}: {step['change']}: {step['measure']} {step['estimate']:.2f} "
                     f"[{low:.2f}, {high:.2f}] -> {step['verdict']}; SQNR {step['sqnr_db']:.1f} dB")
    notes.extend(f"{row['node']}: float32: {row['reason']}" for row in rows if "accuracy guard" in row["reason"])
    return notes


def accuracy_report(evaluator, result, budget: float, measured_on: str) -> dict:
    if result.measured is None:
        return {"summary": f"accuracy not measured ({measured_on})", "measured": False}
    evidence = result.evidence
    return {"summary": evaluator.summary(result.measured) + f"; budget {budget:g} points; measured on {measured_on}"
            f"; {evidence['verdict']}: {evidence['why']}",
            "measured": True, **result.measured, "evidence": evidence,
            "returned_to_float": list(result.excluded), "tried": result.tried,
            "budget": budget}
