"""The compile pipeline: lower -> verify -> float passes -> precision/compression stages -> emit -> verify.

``compile_into(spec, bundle_dir, options, profile)`` does the work inside a (temporary) bundle directory and
returns the manifest. Which passes run, and with what settings, is decided here from the target profile and the
user's options; every decision lands in the compile report.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import onnx_ir as ir

from edgec import __version__
from edgec import ir as edgec_ir
from edgec.bundle import MANIFEST_NAME, SCHEMA_VERSION, deflate_model, manifest_bytes, sha256_file
from edgec.compare import FLOAT_REFERENCE_RTOL, QUANT_REFERENCE_RTOL, REFERENCE_ATOL
from edgec.compiler import verify
from edgec.compiler.emit import EMITTERS, emitter_for
from edgec.compiler.frontends import SourceModel, detect_kind, lower
from edgec.compiler.inputs import load_calibration, verification_inputs
from edgec.compiler.options import CompileOptions
from edgec.compiler.stages import STAGE_ORDER, STAGES
from edgec.compiler.stages.quantize_policy import already_quantized
from edgec.compiler.state import CompileState, PassRecord, pass_record, run_passes
from edgec.errors import (
    AccuracyBudgetError,
    BundleError,
    CompileError,
    ResourceLimitError,
    UsageError,
    VerificationError,
)
from edgec.source_spec import parse_source_spec
from edgec.targets import TargetProfile

__all__ = ["build_float_passes", "compile_into", "run_passes"]



def build_float_passes(profile: TargetProfile, options: CompileOptions) -> list:
    """The float-preserving passes, in order."""
    from edgec.compiler.passes.fold_batchnorm import FoldBatchNorm
    from edgec.compiler.passes.infer_shapes import InferShapes
    from edgec.compiler.passes.simplify_graph import SimplifyGraph

    return [InferShapes(), FoldBatchNorm(), SimplifyGraph(), InferShapes()]


def _source_hash(spec: str) -> str:
    path, source = Path(spec), parse_source_spec(spec)
    if source.kind == "file":
        path = Path(source.location)
    elif source.kind == "module":
        found = importlib.util.find_spec(source.location)
        path = Path(found.origin) if found and found.origin else path
    if path.is_dir():
        digest = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(item.relative_to(path).as_posix().encode() + b"\0" + sha256_file(item).encode())
        return digest.hexdigest()
    return sha256_file(path) if path.is_file() else ""


def _pick_format(profile: TargetProfile, options: CompileOptions) -> tuple[str, str, str | None]:
    """(format, why, the format to fall back to when converting to it fails). An explicit ``--format`` never
    falls back; ``auto`` (the default) takes the profile's format, or the faster measured runtime, and may fall
    back to the device's other runtime."""
    from edgec.runtimes import runtime_for_format

    requested = None if options.format in (None, "auto") else options.format
    if requested is not None:
        fmt, reason = requested, f"--format {requested} (given; no fallback)"
    elif profile.performance.measured is not None:
        from edgec.targets.decide import choose_format  # the faster measured runtime, when both were measured

        fmt, reason = choose_format(profile)
    else:
        fmt, reason = profile.runtime.format, f"the profile's runtime.format ({profile.source_file})"
    if runtime_for_format(fmt) not in profile.runtime.available:
        raise UsageError(f"--format {fmt}: target {profile.name!r} has no {runtime_for_format(fmt)} "
                         f"(runtime.available = {list(profile.runtime.available)} in {profile.source_file})")
    others = [f for f in EMITTERS if f != fmt and runtime_for_format(f) in profile.runtime.available]
    return fmt, reason, (others[0] if others and requested is None else None)


def _shapes_for_lowering(spec: str, options: CompileOptions) -> dict:
    """``--input-shape``; without it, a Keras or PyTorch source (which needs shapes to be lowered at all) takes
    them from a calibration .npz. ONNX sources take missing sizes from any calibration data after lowering."""
    if options.input_shapes or not options.calibration or not str(options.calibration).endswith(".npz") \
            or not Path(options.calibration).is_file() or detect_kind(spec) == "onnx":
        return options.input_shapes
    from edgec.compiler.calibration import npz_shapes

    return npz_shapes(options.calibration)


def _stages_and_emit(model: ir.Model, source: SourceModel, bundle_dir: Path, profile: TargetProfile,
                     options: CompileOptions, state: CompileState, progress):
    """Precision/compression stages, then the emitter of ``state.format``: (model, records, emitted)."""
    records: list[PassRecord] = []
    for stage in STAGE_ORDER:  # each ``apply(model, source, profile, options, state) -> (model, records)``
        progress.step(f"stage {stage}")
        model, stage_records = STAGES.get(stage)(model, source, profile, options, state)
        records.extend(stage_records)
    fmt = state.format
    progress.step(f"emitting {fmt}")
    emitted = emitter_for(fmt)(model, source, bundle_dir, profile, options, state)
    records.append(pass_record(f"emit-{fmt}", emitted.settings, emitted.notes))
    return model, records, emitted


def _clear_outputs(bundle_dir: Path) -> None:
    """Remove what a failed emitter left in the (temporary) bundle directory, keeping the logs."""
    for path in bundle_dir.iterdir():
        if path.name == "logs":
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _emit_with_fallback(model, source, bundle_dir, profile, options, state: CompileState, progress, fallback):
    """``_stages_and_emit``; when converting to the chosen format fails and the device has another runtime
    (``--format auto``), again from the float model for that one, saying why in the report and on the console.
    Returns (model, records, emitted, the state the emitted model was made with)."""
    saved = state.snapshot()
    try:
        return (*_stages_and_emit(model, source, bundle_dir, profile, options, state, progress), state)
    except (CompileError, BundleError) as exc:  # BundleError: the runtime cannot load or run what was emitted
        # Only a failed conversion falls back: a size limit or a verification would not hold elsewhere either.
        # An accuracy refusal of the TFLite emitter does: its int8 keeps whole op types in float, where the ONNX
        # guard returns single layers (ddddocr's detector: one op type, CONV_2D, so nothing to deny-list).
        coarse = isinstance(exc, AccuracyBudgetError) and state.format == "tflite"
        if fallback is None or (isinstance(exc, (AccuracyBudgetError, ResourceLimitError, VerificationError))
                                and not coarse):
            raise
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        failed, reason = state.format, first if len(first) <= 240 else first[:240] + "..."
    state = saved
    state.format = fallback
    state.report["format"] = {**saved.report["format"], "fallback": {"from": failed, "to": fallback, "reason": reason}}
    progress.info(f"{failed} conversion failed ({reason}); falling back to {fallback}, which target "
                  f"{profile.name!r} also runs")
    _clear_outputs(bundle_dir)
    return (*_stages_and_emit(model, source, bundle_dir, profile, options, state, progress), state)


def compile_into(spec: str, bundle_dir: Path, options: CompileOptions, profile: TargetProfile,
                 progress) -> dict:
    """Compile ``spec`` into ``bundle_dir``; returns the manifest (also written there)."""
    fmt, fmt_reason, fallback = _pick_format(profile, options)
    progress.step(f"lowering {spec}")
    source = lower(spec, _shapes_for_lowering(spec, options), options.trust_source)
    names = [v.name for v in source.model.graph.outputs]
    io = edgec_ir.io_signature(source.model, source.layouts)
    state = CompileState(options, profile, fmt, io, progress, report={"format": {"chosen": fmt, "reason": fmt_reason}},
                         calibration=load_calibration(source, io, options),
                         source_quantized=already_quantized(source.model))
    input_sets, state.report["verification_inputs"] = verification_inputs(source, io, options, state.calibration)
    tolerance = (options.rtol, options.atol)
    progress.step("verifying the lowered ONNX against the source framework")
    checks = [verify.verify_stage("front-end", source.reference, verify.ir_runner(source.model, spec), input_sets,
                                  names, tolerance)]
    progress.step("running float passes")
    model, pass_records = run_passes(source.model, build_float_passes(profile, options))
    checks.append(verify.verify_stage("float passes", source.reference, verify.ir_runner(model, spec),
                                      input_sets, names, tolerance))
    state.input_sets, state.float_model = input_sets, model
    model, records, emitted, state = _emit_with_fallback(model, source, bundle_dir, profile, options, state,
                                                         progress, fallback)
    pass_records.extend(records)
    fmt = state.report["format"]["chosen"] = state.format
    # The estimate also refuses a model that cannot fit the target (ResourceLimitError).
    from edgec.targets.estimate import compile_estimate

    state.report["estimate"] = compile_estimate(model, bundle_dir / emitted.model_file, fmt, profile, options,
                                                     [a.shape for a in input_sets[0]])

    def emitted_in_ir_layout(inputs):
        return emitted.from_model(emitted.runner(emitted.to_model(inputs)))

    lossy = emitted.quantized or state.lossy
    checks.append(verify.verify_stage(f"emitted {fmt}", source.reference, emitted_in_ir_layout,
                                      _emitted_sets(emitted, input_sets, state.report), names,
                                      None if lossy else tolerance))
    progress.step("writing the bundle")
    state.compress_model = bool(options.sparsity)
    state.float_model_bytes = state.float_model_bytes or len(edgec_ir.to_proto(state.float_model).SerializeToString())
    manifest = _manifest(bundle_dir, spec, source, profile, emitted, input_sets[0], pass_records, checks, state)
    (bundle_dir / MANIFEST_NAME).write_bytes(manifest_bytes(manifest))
    return manifest


def _emitted_sets(emitted, input_sets: list, report: dict) -> list:
    """The input sets the emitted model takes: all of them, or for a model with pinned shapes (TFLite) those of
    the pinned sizes (the report says the dynamic dimensions were pinned)."""
    pinned = [[d for d in i["shape"]] for i in emitted.io["inputs"]]
    if emitted.format == "onnx" or not pinned:
        return input_sets
    sizes = sorted(int(np.prod(s)) for s in pinned)
    kept = [s for s in input_sets if sorted(int(np.prod(a.shape)) for a in s) == sizes]
    if len(kept) < len(input_sets):
        report.setdefault("pinned", {})["verified_sizes_dropped"] = len(input_sets) - len(kept)
    return kept or input_sets[:1]


def _write_reference(bundle_dir: Path, emitted, inputs: list[np.ndarray]) -> list[np.ndarray]:
    model_inputs = emitted.to_model(inputs)
    outputs = emitted.runner(model_inputs)
    (bundle_dir / "reference").mkdir(exist_ok=True)
    for name, arrays, prefix in (("inputs", model_inputs, "i"), ("outputs", outputs, "o")):
        with open(bundle_dir / "reference" / f"{name}.npz", "wb") as handle:
            np.savez(handle, **{f"{prefix}{k}": np.asarray(a) for k, a in enumerate(arrays)})
    return outputs


def _reference_atol(outputs: list[np.ndarray], rtol: float) -> list[float]:
    """Per output, the absolute part of the device's check: ``rtol`` of the output's scale, so that elements near
    zero (where kernels that sum in another order differ most) are judged against the output's scale."""
    atols = []
    for array in outputs:
        finite = np.abs(np.asarray(array, np.float64))
        finite = finite[np.isfinite(finite)]
        atols.append(max(REFERENCE_ATOL, rtol * float(finite.max()) if finite.size else 0.0))
    return atols


def _file_table(bundle_dir: Path) -> dict:
    table = {}
    for path in sorted(bundle_dir.rglob("*")):
        rel = path.relative_to(bundle_dir).as_posix()
        if path.is_file() and rel != MANIFEST_NAME and not rel.startswith("logs/"):
            table[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return table


def _manifest(bundle_dir: Path, spec: str, source: SourceModel, profile: TargetProfile, emitted,
              inputs: list[np.ndarray], pass_records: list[PassRecord], checks: list[dict],
              state: CompileState) -> dict:
    outputs = _write_reference(bundle_dir, emitted, inputs)
    model_size = (bundle_dir / emitted.model_file).stat().st_size
    # --sparsity targets storage-bound devices: the zeros it makes only save space in a compressed file.
    encoding = deflate_model(bundle_dir, emitted.model_file) if state.compress_model else None
    files = _file_table(bundle_dir)
    size = {"model_bytes": model_size, "float_model_bytes": state.float_model_bytes or model_size}
    if encoding:
        size["stored_model_bytes"] = files[encoding["file"]]["size"]
    report = {"source_notes": source.notes, "verification": checks, "size": size, **state.report}
    # An already quantized source runs integer kernels too: they round differently from machine to machine.
    rtol = QUANT_REFERENCE_RTOL if emitted.quantized or state.source_quantized else FLOAT_REFERENCE_RTOL
    return {
        "schema_version": SCHEMA_VERSION,
        "edgec_version": __version__,
        "name": Path(spec.rpartition(":")[2] if ":" in spec and not Path(spec).exists() else spec).stem,
        "format": emitted.format,
        "model_file": emitted.model_file,
        "runtime": {"name": emitted.runtime, "threads": profile.threads},
        "target": {"name": profile.name, "profile_sha256": profile.sha256, "description": profile.description,
                   "power": {"idle_watts": profile.power.idle_watts, "active_watts": profile.power.active_watts,
                             "sensors": list(profile.power.sensors)}},
        "source": {"path": Path(spec).name if Path(spec).exists() else spec, "kind": source.kind,
                   "sha256": _source_hash(spec)},
        "io": emitted.io,
        "files": files,
        "reference": {"inputs": "reference/inputs.npz", "outputs": "reference/outputs.npz", "rtol": rtol,
                      "atol": _reference_atol(outputs, rtol)},
        "passes": pass_records,
        "report": report,
        **({"model_encoding": encoding} if encoding else {}),
    }
