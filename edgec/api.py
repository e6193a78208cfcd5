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

__all__ = ["bench", "compile", "default_output", "farm_bench", "inspect_bundle", "push", "verify_bundle"]


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
    session = runtime.load(bundle.model_bytes(), threads=threads,
                           name=str(bundle.path / bundle.manifest["model_file"]))
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


def bench(bundle: str | os.PathLike, device: str = "local", *, inventory=None, trust_new_host: bool = False,
          results: str | os.PathLike | None = None, **options) -> dict:
    """Benchmark a bundle with the device agent and return its BenchResult document.

    ``device`` is ``local``, ``user@host[:port]`` or an inventory name; remote runs push the bundle when needed.
    ``options`` are the fields of ``edgec.device_agent.options.BenchOptions`` (runs, warmup, threads, power...).
    Remote results are stored in ``results`` (default ``~/.edgec/results.db``); local ones only when it is given.
    """
    from edgec.commands.bench import run_local
    from edgec.commands.farm import run_remote, store_local
    from edgec.device_agent.options import BenchOptions

    bench_options = BenchOptions(**options)
    if device != "local":
        return run_remote(bundle, device, bench_options, inventory=inventory, trust_new_host=trust_new_host,
                          results=results)
    doc = run_local(bundle, bench_options, quiet=True)
    if results:
        store_local(results, doc)
    return doc


def push(bundle: str | os.PathLike, device: str, *, inventory=None, trust_new_host: bool = False) -> dict:
    """Copy a bundle to a device's content-addressed store; returns the push report (bytes sent, where)."""
    from edgec.commands.farm import ssh_options
    from edgec.deploy.inventory import resolve_device
    from edgec.deploy.push import push_bundle
    from edgec.deploy.ssh import connect

    target = resolve_device(device, inventory)
    with connect(target.ssh_target(), ssh_options(trust_new_host)) as conn:
        return push_bundle(conn, Bundle(bundle)).to_dict()


def farm_bench(bundle: str | os.PathLike, *, inventory=None, tags: tuple[str, ...] = (), names: tuple[str, ...] = (),
               parallel: int = 8, device_timeout: float = 600.0, results: str | os.PathLike | None = None,
               trust_new_host: bool = False, **options):
    """Benchmark a bundle on every selected inventory device in parallel; returns the FarmRun (one outcome
    per device, each stored in the results database as soon as it is known)."""
    from edgec.commands.farm import ssh_options
    from edgec.deploy.farm import farm_bench as run_farm
    from edgec.deploy.inventory import load_inventory, select_devices
    from edgec.deploy.results import ResultsStore
    from edgec.device_agent.options import BenchOptions

    devices = select_devices(load_inventory(inventory), tags, names)
    with ResultsStore(results) as store:
        return run_farm(devices, Bundle(bundle), store=store, options=BenchOptions(**options),
                        ssh=ssh_options(trust_new_host), parallel=parallel, device_timeout=device_timeout)
