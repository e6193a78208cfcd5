"""The compile pipeline: lower -> verify -> float passes -> precision/compression stages -> emit -> verify.

``compile_into(spec, bundle_dir, options, profile)`` does the work inside a (temporary) bundle directory and
returns the manifest. Which passes run, and with what settings, is decided here from the target profile and the
user's options; every decision lands in the compile report.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import onnx_ir as ir

from edgec import __version__
from edgec import ir as edgec_ir
from edgec.bundle import MANIFEST_NAME, SCHEMA_VERSION, deflate_model, manifest_bytes, sha256_file
from edgec.compiler import verify
from edgec.compiler.emit import emitter_for
from edgec.compiler.frontends import SourceModel, lower
from edgec.compiler.options import CompileOptions
from edgec.errors import UsageError
from edgec.targets import TargetProfile

__all__ = ["build_float_passes", "compile_into", "run_passes"]

# Relative-error tolerance the device-side self-check allows for float and for quantized bundles: kernels and
# thread counts differ between the compiling machine and the device.
FLOAT_REFERENCE_RTOL, QUANT_REFERENCE_RTOL = 1e-3, 5e-2
# Stages the pipeline runs between the float passes and emission, each a module with
# ``apply(model, source, profile, options, context) -> (model, records)`` (quantization, pruning, ...).
STAGES: list[str] = ["edgec.compiler.stages.compress", "edgec.compiler.stages.quantize"]


def build_float_passes(profile: TargetProfile, options: CompileOptions) -> list:
    """The float-preserving passes, in order."""
    from edgec.compiler.passes.fold_batchnorm import FoldBatchNorm
    from edgec.compiler.passes.infer_shapes import InferShapes
    from edgec.compiler.passes.simplify_graph import SimplifyGraph

    return [InferShapes(), FoldBatchNorm(), SimplifyGraph(), InferShapes()]


def run_passes(model: ir.Model, passes: list) -> tuple[ir.Model, list[dict]]:
    records = []
    for pass_ in passes:
        nodes_before = model.graph.num_nodes()
        result = pass_(model)
        model = result.model
        records.append({"name": pass_.name, "settings": pass_.settings(), "modified": bool(result.modified),
                        "nodes_before": nodes_before, "nodes_after": model.graph.num_nodes(),
                        "notes": list(pass_.notes)})
    return model, records


def _source_hash(spec: str) -> str:
    path = Path(spec)
    if not path.exists() and ":" in spec:
        module = spec.rpartition(":")[0]
        if module.endswith(".py"):
            path = Path(module)
        else:
            found = importlib.util.find_spec(module)
            path = Path(found.origin) if found and found.origin else path
    if path.is_dir():
        digest = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(item.relative_to(path).as_posix().encode() + b"\0" + sha256_file(item).encode())
        return digest.hexdigest()
    return sha256_file(path) if path.is_file() else ""


def _input_sets(source: SourceModel, io: dict, options: CompileOptions, context: dict) -> list[list[np.ndarray]]:
    dynamic_batch = all(i["shape"] and i["shape"][0] is None for i in io["inputs"])
    # The first set becomes the bundle's reference inputs, which the agent also benchmarks with: the source's
    # example shapes (batch 1 unless the user said otherwise). A second set exercises a dynamic batch.
    sets = [verify.generate_inputs(io["inputs"], source.example_shapes, options.seed)]
    if dynamic_batch:
        sets.append(verify.generate_inputs(io["inputs"], source.example_shapes, options.seed + 1, batch=2))
    if options.calibration:
        from edgec.compiler.calibration import load_samples

        samples = context["calibration"] = load_samples(options.calibration, io["inputs"],
                                                        preprocess=options.preprocess)
        sets.extend(samples.batches(size=1 if not dynamic_batch else 8, limit=16))
    return sets


def _pick_format(profile: TargetProfile, options: CompileOptions) -> str:
    fmt = options.format or profile.runtime.format
    if options.format is None and profile.performance.measured is not None:
        from edgec.targets.decide import choose_format  # the faster measured runtime, when both were measured

        fmt = choose_format(profile)[0]
    from edgec.runtimes import runtime_for_format

    runtime = runtime_for_format(fmt)
    if runtime not in profile.runtime.available:
        raise UsageError(f"--format {fmt}: target {profile.name!r} has no {runtime} (runtime.available = "
                         f"{list(profile.runtime.available)} in {profile.source_file})")
    return fmt


def compile_into(spec: str, bundle_dir: Path, options: CompileOptions, profile: TargetProfile,
                 progress) -> dict:
    """Compile ``spec`` into ``bundle_dir``; returns the manifest (also written there)."""
    fmt = _pick_format(profile, options)
    progress.step(f"lowering {spec}")
    source = lower(spec, options.input_shapes)
    names = [v.name for v in source.model.graph.outputs]
    io = edgec_ir.io_signature(source.model, source.layouts)
    context: dict = {"report": {}, "progress": progress}
    input_sets = _input_sets(source, io, options, context)
    progress.step("verifying the lowered ONNX against the source framework")
    checks = [verify.verify_stage("front-end", source.reference, verify.ir_runner(source.model, spec), input_sets,
                                  names, options.tolerance)]
    progress.step("running float passes")
    model, pass_records = run_passes(source.model, build_float_passes(profile, options))
    checks.append(verify.verify_stage("float passes", source.reference, verify.ir_runner(model, spec),
                                      input_sets, names, options.tolerance))
    context.update({"input_sets": input_sets, "float_model": model})
    for stage in STAGES:
        progress.step(f"stage {stage.rsplit('.', 1)[-1]}")
        module = importlib.import_module(stage)
        model, records = module.apply(model, source, profile, options, context)
        pass_records.extend(records)
    progress.step(f"emitting {fmt}")
    emitted = emitter_for(fmt)(model, source, bundle_dir, profile, options, context)
    pass_records.append({"name": f"emit-{fmt}", "settings": emitted.settings, "modified": True,
                         "notes": emitted.notes})
    # The estimate also refuses a model that cannot fit the target (ResourceLimitError).
    from edgec.targets.estimate import compile_estimate

    context["report"]["estimate"] = compile_estimate(model, bundle_dir / emitted.model_file, fmt, profile, options,
                                                     [a.shape for a in input_sets[0]])

    def emitted_in_ir_layout(inputs):
        return emitted.from_model(emitted.runner(emitted.to_model(inputs)))

    checks.append(verify.verify_stage(f"emitted {fmt}", source.reference, emitted_in_ir_layout, input_sets,
                                      names, None if emitted.quantized or context.get("lossy") else options.tolerance))
    progress.step("writing the bundle")
    context["compress_model"] = bool(options.sparsity)
    context["float_model_bytes"] = context.get("float_model_bytes") or len(
        edgec_ir.to_proto(context["float_model"]).SerializeToString())
    manifest = _manifest(bundle_dir, spec, source, profile, emitted, input_sets[0], pass_records, checks, context)
    (bundle_dir / MANIFEST_NAME).write_bytes(manifest_bytes(manifest))
    return manifest


def _write_reference(bundle_dir: Path, emitted, inputs: list[np.ndarray]) -> None:
    model_inputs = emitted.to_model(inputs)
    outputs = emitted.runner(model_inputs)
    (bundle_dir / "reference").mkdir(exist_ok=True)
    for name, arrays, prefix in (("inputs", model_inputs, "i"), ("outputs", outputs, "o")):
        with open(bundle_dir / "reference" / f"{name}.npz", "wb") as handle:
            np.savez(handle, **{f"{prefix}{k}": np.asarray(a) for k, a in enumerate(arrays)})


def _file_table(bundle_dir: Path) -> dict:
    table = {}
    for path in sorted(bundle_dir.rglob("*")):
        rel = path.relative_to(bundle_dir).as_posix()
        if path.is_file() and rel != MANIFEST_NAME and not rel.startswith("logs/"):
            table[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return table


def _manifest(bundle_dir: Path, spec: str, source: SourceModel, profile: TargetProfile, emitted,
              inputs: list[np.ndarray], pass_records: list[dict], checks: list[dict], context: dict) -> dict:
    _write_reference(bundle_dir, emitted, inputs)
    model_size = (bundle_dir / emitted.model_file).stat().st_size
    # --sparsity targets storage-bound devices: the zeros it makes only save space in a compressed file.
    encoding = deflate_model(bundle_dir, emitted.model_file) if context.get("compress_model") else None
    files = _file_table(bundle_dir)
    size = {"model_bytes": model_size, "float_model_bytes": context.get("float_model_bytes", model_size)}
    if encoding:
        size["stored_model_bytes"] = files[encoding["file"]]["size"]
    report = {"source_notes": source.notes, "verification": checks, "size": size, **context["report"]}
    rtol = QUANT_REFERENCE_RTOL if emitted.quantized else FLOAT_REFERENCE_RTOL
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
                      "atol": 1e-5},
        "passes": pass_records,
        "report": report,
        **({"model_encoding": encoding} if encoding else {}),
    }
