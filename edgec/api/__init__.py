"""The Python API; the command line (``edgec.commands``) is a skin on it and nothing here imports it.

>>> from edgec import api
>>> bundle = api.compile("model.keras", "build/model-rpi4", target="rpi4", format="onnx")
>>> api.verify_bundle(bundle.path)["ok"]
True
>>> api.bench(bundle.path, runs=50).result["latency_ms"]["p50"]  # doctest: +SKIP

Results are typed: ``Bundle``, ``BenchRun``, ``PushReport``, ``FarmRun``, ``Rollout``, ``FarmStatus``,
``ResultsReport``, ``SweepRun``.
Modules: ``_bundles`` (compile, inspect, verify, estimate), ``_devices`` (bench, push, farm, calibrate: the SSH
layer and paramiko load only when a remote device is used), ``_deploy`` (deploy, rollback, farm status of the
devices' inference services), ``_reports`` (stored results and their HTML pages)
and ``_sweep`` (variants of one model compiled, scored, benchmarked and compared on one page).
"""

from __future__ import annotations

from edgec.api._bundles import (
    Bundle,
    compile,
    default_output,
    estimate,
    inspect_bundle,
    list_profiles,
    load_profile,
    parse_input_shapes,
    verify_bundle,
)
from edgec.api._demo import DemoRun, run_demo
from edgec.api._deploy import (
    FarmStatus,
    ctrl_c,
    deploy_bundle,
    deploy_targets,
    farm_status,
    rollback,
    watch_farm_status,
)
from edgec.api._devices import (
    BenchRun,
    SshOptions,
    bench,
    calibrate_target,
    devices,
    farm_bench,
    farm_check,
    farm_progress,
    farm_prune,
    push,
)
from edgec.api._reports import (
    ResultsReport,
    compare_runs,
    compile_report,
    delete_run,
    results_report,
    stored_run,
    stored_runs,
)
from edgec.api._sweep import SweepOptions, SweepRun, Variant, parse_variants, run_sweep, sweep

__all__ = [
    "BenchRun",
    "Bundle",
    "DemoRun",
    "FarmStatus",
    "ResultsReport",
    "SshOptions",
    "SweepOptions",
    "SweepRun",
    "Variant",
    "bench",
    "calibrate_target",
    "compare_runs",
    "compile",
    "compile_report",
    "ctrl_c",
    "default_output",
    "delete_run",
    "deploy_bundle",
    "deploy_targets",
    "devices",
    "estimate",
    "farm_bench",
    "farm_check",
    "farm_progress",
    "farm_prune",
    "farm_status",
    "inspect_bundle",
    "list_profiles",
    "load_profile",
    "parse_input_shapes",
    "parse_variants",
    "push",
    "results_report",
    "rollback",
    "run_demo",
    "run_sweep",
    "stored_run",
    "stored_runs",
    "sweep",
    "verify_bundle",
    "watch_farm_status",
]
