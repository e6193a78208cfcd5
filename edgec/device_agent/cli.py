"""The agent's command line: ``info``, ``check BUNDLE``, ``bench BUNDLE [...]``, ``serve`` (JSON lines for a
host's session), and the live service: ``run`` (foreground), ``start``/``stop`` (pidfile), ``status``,
``wait-healthy``, ``activate ID``, ``rollback [--to ID]`` (``store.py``, ``daemon.py``, ``httpd.py``).

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
    _service_commands(commands)
    return parser


def _service_commands(commands) -> None:
    def with_dir(name: str, text: str):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--edgec-dir", default="~/.edgec", help="the store: bundles/, active, serve.pid")
        return sub

    run = with_dir("run", "serve the active bundle over HTTP until SIGTERM (see httpd.py)")
    start = with_dir("start", "start `run` in the background (pidfile) and wait until it answers")
    for sub in (run, start):
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, default=8750)
        sub.add_argument("--token-file", help="a file holding the token; required with a non-loopback --host")
        sub.add_argument("--workers", type=int, default=4)
        sub.add_argument("--queue", type=int, default=32, dest="queue_size")
        sub.add_argument("--max-body", type=int, default=16 << 20)
        sub.add_argument("--threads", type=int)
        sub.add_argument("--sysfs-root", default="/sys")
        sub.add_argument("--power", default="auto")
        sub.add_argument("--poll", type=float, default=0.2, dest="poll_s")
    start.add_argument("--timeout", type=float, default=60.0)
    with_dir("stop", "stop the service (SIGTERM, drain, SIGKILL after --timeout)").add_argument(
        "--timeout", type=float, default=30.0)
    status = with_dir("status", "what the service reports: /healthz, /metrics, the store's active bundle")
    status.add_argument("--probe", help="also send this bundle's reference inputs through the service")
    status.add_argument("--probe-count", type=int, default=1)
    wait = with_dir("wait-healthy", "wait until the service serves BUNDLE_ID and reproduces its references")
    wait.add_argument("bundle_id")
    wait.add_argument("--timeout", type=float, default=30.0)
    activate = with_dir("activate", "verify a stored bundle's hashes and make it the active one (atomic)")
    activate.add_argument("bundle")
    activate.add_argument("--keep", type=int, default=5)
    back = with_dir("rollback", "activate the previous bundle (or --to ID); --none removes the active pointer")
    back.add_argument("--to")
    back.add_argument("--none", action="store_true")
    back.add_argument("--keep", type=int, default=5)


_RUN_FLAGS = ("host", "port", "token_file", "workers", "queue_size", "max_body", "threads", "sysfs_root", "power",
              "poll_s")


def _run_argv(args) -> list[str]:
    """``start``'s options as the ``run`` argv of the process it starts."""
    flags = {"queue_size": "--queue", "poll_s": "--poll"}
    argv = []
    for name in _RUN_FLAGS:
        value = getattr(args, name)
        if value is not None:
            argv += [flags.get(name, "--" + name.replace("_", "-")), str(value)]
    return argv


def _service_dispatch(args) -> dict | None:
    from edgec.device_agent import daemon, store

    where = os.path.expanduser(args.edgec_dir)
    if args.command == "run":
        return daemon.run_service(where, **{name: getattr(args, name) for name in _RUN_FLAGS})
    if args.command == "start":
        return daemon.start_service(where, _run_argv(args), args.timeout)
    if args.command == "stop":
        return daemon.stop_service(where, args.timeout)
    if args.command == "status":
        return daemon.service_status(where, args.probe, args.probe_count)
    if args.command == "wait-healthy":
        return daemon.wait_healthy(where, args.bundle_id, args.timeout)
    if args.command == "activate":
        return store.activate(where, args.bundle, args.keep)
    if args.none:
        return store.deactivate(where)
    return store.rollback(where, args.to, args.keep)


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
    if args.command != "serve":
        return _service_dispatch(args)
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
