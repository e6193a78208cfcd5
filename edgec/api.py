"""The Python API; the CLI is a skin on it.

>>> from edgec import api
>>> bundle = api.compile("model.keras", "build/model-rpi4", target="rpi4", format="onnx")
>>> api.verify_bundle(bundle.path)["ok"]
True
"""

from __future__ import annotations

import os
from pathlib import Path

from edgec.bundle import Bundle, check_reference, write_atomically
from edgec.errors import BundleError

__all__ = ["compile", "default_output", "inspect_bundle", "verify_bundle"]


def default_output(source: str, target: str) -> Path:
    """``<stem>-<target>.bundle`` in the current directory."""
    stem = Path(source.rpartition(":")[2] if ":" in source and not Path(source).exists() else source).stem
    return Path(f"{stem}-{Path(target).stem}.bundle")


def compile(source: str, out: str | os.PathLike | None = None, *, progress=None, debug: bool = False,
            **options) -> Bundle:
    """Compile ``source`` into a bundle directory ``out`` (written atomically) and return it.

    ``options`` are the fields of ``edgec.compiler.options.CompileOptions`` (target, format, quantize,
    input_shapes, calibration, ...). Third-party console output goes to ``out/logs/compile.log`` unless
    ``debug``.
    """
    from edgec._capture import captured_output
    from edgec._progress import Progress
    from edgec.compiler.options import CompileOptions
    from edgec.compiler.pipeline import compile_into
    from edgec.targets import load_profile

    opts = CompileOptions(**options)
    profile = load_profile(opts.target)
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
    from edgec.runtimes import load_runtime, runtime_for_format

    bundle = Bundle(path)
    bundle.check_files()
    runtime = load_runtime(runtime_for_format(bundle.format))
    session = runtime.load(bundle.model_path, threads=threads)
    inputs, _ = bundle.reference()
    records = check_reference(bundle, session.run(inputs))
    failed = [r for r in records if not r["ok"]]
    if failed:
        bad = failed[0]
        detail = bad.get("detail") or f"max abs diff {bad['max_abs_diff']:.3g}, relative {bad['rel_diff']:.3g}"
        raise BundleError(f"{bundle.path}: output {bad['name']!r} no longer matches the reference ({detail}); "
                          "the model file or its runtime changed: recompile the bundle")
    return {"ok": True, "bundle_id": bundle.bundle_id, "path": str(bundle.path), "runtime": runtime.version(),
            "outputs": records}
