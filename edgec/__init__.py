"""edgec: compile Keras, PyTorch and ONNX models into verified bundles for edge devices.

The Python API (``edgec.api``) and the exceptions (``edgec.errors``) are re-exported here, loaded on first use:
``import edgec`` stays cheap (this file is also shipped inside the device agent), and torch, TensorFlow,
onnxruntime and paramiko load only where a function needs them.

>>> import edgec
>>> bundle = edgec.compile("model.onnx", "build/model-host", target="host")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = ("BenchRun", "ResultsReport", "SweepOptions", "Variant", "bench", "calibrate_target", "compare_runs", "compile", "delete_run",
        "default_output", "devices", "estimate", "farm_bench", "farm_check", "farm_prune", "inspect_bundle",
        "parse_variants", "push", "results_report", "run_sweep", "stored_run", "stored_runs", "sweep",
        "SweepRun", "verify_bundle", "DemoRun", "run_demo", "FarmStatus", "deploy_bundle", "deploy_targets",
        "farm_status", "rollback", "watch_farm_status", "SshOptions", "farm_progress", "ctrl_c", "Bundle", "compile_report",
        "list_profiles", "load_profile", "parse_input_shapes")
_ERRORS = ("AccuracyBudgetError", "BundleError", "CalibrationDataError", "ClusterError", "CompileError", "DeviceError",
           "DeviceTimeoutError", "EdgecError", "HostKeyError", "InputError", "ResourceLimitError", "ResultsError",
           "RuntimeMissingError", "SourceModelError", "TargetError", "TransferError", "UnsafeInputError",
           "UsageError", "VerificationError")
_LAZY = {**{name: "edgec.api" for name in _API}, **{name: "edgec.errors" for name in _ERRORS}}

__all__ = ["__version__", *_API, *_ERRORS]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgec' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
