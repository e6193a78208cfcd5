"""Bundles: compile one, look inside one, re-check one."""

from __future__ import annotations

import os
from pathlib import Path

from edgec._capture import captured_output
from edgec._progress import Progress
from edgec.bundle import Bundle, check_reference, write_atomically
from edgec.compare import describe
from edgec.compiler.options import CompileOptions
from edgec.errors import BundleError
from edgec.runtimes import load_runtime, runtime_for_format
from edgec.settings import edgec_home
from edgec.source_spec import parse_source_spec
from edgec.targets import list_profiles, load_profile
from edgec.targets.estimate import estimate_model, estimate_path

__all__ = ["Bundle", "compile", "default_output", "estimate", "inspect_bundle", "list_profiles", "load_profile",
           "parse_input_shapes", "verify_bundle"]


def parse_input_shapes(specs) -> dict:
    """``--input-shape`` values (``name=1x3x224x224``, ``N``/``-1``/``?`` dynamic, or a bare shape for a one-input
    model) as the ``input_shapes`` option of ``compile``/``estimate``; see ``edgec.compiler.frontends``."""
    from edgec.compiler.frontends import parse_input_shapes as parse  # numpy and onnx-ir

    return parse(specs)


def default_output(source: str, target: str) -> Path:
    """``<stem>-<target>.bundle`` in the current directory."""
    spec = parse_source_spec(source)
    stem = spec.function if spec.is_function else Path(source).stem
    return Path(f"{stem}-{Path(target).stem}.bundle")


def compile(source: str, out: str | os.PathLike | None = None, *, progress=None, debug: bool = False,
            profile=None, **options) -> Bundle:
    """Compile ``source`` into a bundle directory ``out`` (written atomically) and return it.

    ``options`` are the fields of ``edgec.compiler.options.CompileOptions`` (target, format, quantize,
    input_shapes, calibration, ...). Third-party console output goes to ``out/logs/compile.log`` unless
    ``debug``. ``profile`` (a loaded ``TargetProfile``) replaces loading ``target`` here: a cluster worker
    compiles for the profile the driver resolved (``host`` is the driver's machine, not the worker's).
    """
    from edgec.compiler.pipeline import compile_into  # onnx and onnx-ir: 2 s of imports

    opts = CompileOptions(**options)
    profile = profile if profile is not None else load_profile(opts.target)
    out = Path(out) if out is not None else default_output(str(source), opts.target)
    progress = progress or Progress(enabled=False)

    def fill(tmp: Path) -> None:
        with captured_output(tmp / "logs" / "compile.log", enabled=not debug):
            compile_into(str(source), tmp, opts, profile, progress)

    try:
        write_atomically(out, fill, force=opts.force)
    finally:
        progress.close()
    return Bundle(out)


def inspect_bundle(path: str | os.PathLike) -> dict:
    """The manifest of a bundle, with its id."""
    bundle = Bundle(path)
    return {"bundle_id": bundle.bundle_id, "path": str(bundle.path), **bundle.manifest}


def verify_bundle(path: str | os.PathLike, threads: int | None = None) -> dict:
    """Re-check every file's sha256 and run the reference inputs, comparing with the stored outputs.

    Raises BundleError naming the first file or output that fails.
    """
    bundle = Bundle(path)
    bundle.check_files()
    runtime = load_runtime(runtime_for_format(bundle.format))
    session = runtime.load(bundle.model_bytes(), threads=threads,
                           name=str(bundle.path / bundle.manifest["model_file"]))
    inputs, _ = bundle.reference()
    records = check_reference(bundle, session.run(inputs))
    failed = [r for r in records if not r["ok"]]
    if failed:
        bad = failed[0]
        detail = describe(bad)
        raise BundleError(f"{bundle.path}: output {bad['name']!r} no longer matches the reference ({detail}); "
                          "the model file or its runtime changed: recompile the bundle")
    return {"ok": True, "bundle_id": bundle.bundle_id, "path": str(bundle.path), "runtime": runtime.version(),
            "outputs": records}


def estimate(source: str | os.PathLike, target: str, input_shapes: dict | None = None) -> dict:
    """Predicted latency (per op), peak memory, storage and energy of ``source`` on ``target``, each with its
    basis. A bundle directory or ``.onnx`` file is estimated directly; other sources are lowered (as compile
    does, third-party output going to ``$EDGEC_HOME/logs/estimate.log``)."""
    profile = load_profile(target)
    input_shapes = input_shapes or {}
    path = Path(source)
    if (path.is_dir() and (path / "manifest.json").is_file()) or (path.is_file() and path.suffix == ".onnx"):
        return estimate_path(path, profile)
    from edgec import ir as edgec_ir  # onnx, onnx-ir and the front-ends: loaded only for a source to lower
    from edgec.compiler.frontends import lower
    from edgec.compiler.pipeline import build_float_passes, run_passes

    # Front-ends (torch.export, TensorFlow) print from C++: into a log, as `edgec compile` does.
    with captured_output(edgec_home() / "logs" / "estimate.log"):
        lowered = lower(source, input_shapes)
        model, _ = run_passes(lowered.model, build_float_passes(profile, CompileOptions(target=profile.name)))
    return estimate_model(edgec_ir.to_proto(model), profile)
