"""The agent's command line: ``info``, ``check BUNDLE``, ``bench BUNDLE [...]``, ``serve``.

Everything on stdout is JSON; progress goes to stderr when it is a terminal. An error prints
``{"error": {...}}`` and exits with the EdgecError's exit code (RuntimeMissingError = 7, BundleError = 6,
UsageError = 2); anything unexpected exits 70 with its type and message.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys

from edgec.device_agent.schema import SCHEMA_VERSION
from edgec.errors import EdgecError, UsageError

__all__ = ["build_parser", "error_doc", "info", "main"]

INTERNAL_EXIT = 70


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and exit 2; the caller wants JSON
        raise UsageError(f"{self.prog}: {message}")


def _power_model(text: str):
    from edgec.device_agent.power import parse_model

    return parse_model(text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgec-agent", description="edgec device agent (JSON on stdout)")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    commands.required = True
    commands.add_parser("info", help="what this device has: Python, CPU, runtimes, free disk")
    check = commands.add_parser("check", help="verify a bundle's hashes and reference outputs")
    check.add_argument("bundle")
    check.add_argument("--threads", type=int)
    bench = commands.add_parser("bench", help="benchmark a bundle; print one BenchResult document")
    bench.add_argument("bundle")
    bench.add_argument("--runs", type=int, default=200)
    bench.add_argument("--warmup", type=int, default=20)
    bench.add_argument("--threads", type=int)
    bench.add_argument("--duration", type=float, dest="duration_s")
    bench.add_argument("--power", default="auto")
    bench.add_argument("--power-command")
    bench.add_argument("--power-model", type=str)
    bench.add_argument("--power-interval", type=float, default=0.02, dest="power_interval_s")
    bench.add_argument("--idle", type=float, default=1.0, dest="idle_s", help="seconds of idle power sampling")
    bench.add_argument("--sysfs-root", default="/sys")
    serve = commands.add_parser("serve", help="JSON lines on stdin/stdout: {id, op: info|check|load|bench|quit, ...}")
    serve.add_argument("--heartbeat", type=float, default=None,
                       help="exit when no input line (blank ones count) came for this many seconds")
    return parser


def info() -> dict:
    """The ``info`` document: enough for the host to decide what to push and how to run it here."""
    from edgec.device_agent.conditions import cpu_info
    from edgec.device_agent.zipapp import agent_version
    from edgec.runtimes import RUNTIMES, load_runtime

    runtimes, packages = {}, {}
    for name in sorted(RUNTIMES):
        module = load_runtime(name)
        available = module.available()
        runtimes[name] = module.version() if available else None
        packages[name] = module.package() if available else None
    try:
        import numpy

        numpy_version = numpy.__version__
    except ImportError:
        numpy_version = None
    cwd = os.getcwd()
    return {"schema_version": SCHEMA_VERSION, "agent_version": agent_version(),
            "python": platform.python_version(), "executable": sys.executable,
            "platform": {"system": platform.system(), "release": platform.release(), "machine": platform.machine()},
            "cpu": cpu_info(), "runtimes": runtimes, "runtime_packages": packages, "numpy": numpy_version,
            "free_disk_bytes": {cwd: shutil.disk_usage(cwd).free}}


def error_doc(exc: BaseException) -> dict:
    if isinstance(exc, EdgecError):
        message = " ".join(str(exc).split()) or type(exc).__name__
        return {"type": type(exc).__name__, "message": message, "exit_code": exc.exit_code}
    return {"type": "InternalError", "message": f"{type(exc).__name__}: {exc}", "exit_code": INTERNAL_EXIT}


def _bench_options(args) -> dict:
    return {"runs": args.runs, "warmup": args.warmup, "threads": args.threads, "duration_s": args.duration_s,
            "power": args.power, "power_command": args.power_command,
            "power_model": _power_model(args.power_model) if args.power_model else None,
            "sysfs_root": args.sysfs_root, "power_interval_s": args.power_interval_s, "idle_s": args.idle_s}


def _dispatch(args) -> dict | None:
    if args.command == "info":
        return info()
    if args.command == "check":
        from edgec.device_agent.bench import check_bundle

        return check_bundle(args.bundle, args.threads)
    if args.command == "bench":
        from edgec.device_agent.bench import run_bench

        return run_bench(args.bundle, _bench_options(args))
    from edgec.device_agent.serve import serve

    serve(sys.stdin, sys.stdout, heartbeat=args.heartbeat)
    return None


def main(argv=None) -> int:
    try:
        document = _dispatch(build_parser().parse_args(argv))
    except KeyboardInterrupt:
        print(json.dumps({"error": {"type": "Interrupted", "message": "interrupted", "exit_code": 130}}))
        return 130
    except Exception as exc:  # one JSON error document for whatever went wrong, typed when it is ours
        if sys.stderr.isatty():
            sys.stderr.write("\r\033[K")  # clear a progress line left unfinished
        doc = error_doc(exc)
        print(json.dumps({"error": doc}))
        return doc["exit_code"]
    if document is not None:
        print(json.dumps(document, sort_keys=True))
    return 0
