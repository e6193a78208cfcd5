"""``edgec targets calibrate``: run the micro-benchmark suite through the device agent and write a profile overlay.

Where the agent runs:

- ``local``: the agent zipapp with this Python, as ``edgec bench --device local`` does;
- ``user@host[:port]`` or an inventory NAME: over SSH (edgec.deploy): the agent and every bundle are pushed
  (content-addressed, so a second calibration sends nothing new), then run there with the device's Python.

Timings go through one ``serve`` session (JSON lines, a requests file on stdin), so the runtime is imported
once. The memory probes run as separate ``bench`` processes: a process's peak RSS only grows, so probes sharing
one would measure each other. The overlay is written by ``edgec.targets.overlay``.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgec.device_agent.client import bench_argv, parse_output
from edgec.device_agent.options import BenchOptions
from edgec.errors import DeviceError, DeviceTimeoutError, EdgecError, UsageError
from edgec.targets.microbench import KernelSpec, build_bundle, suite, thread_probes

__all__ = ["CalibrationRun", "calibrate", "calibrate_target", "choose_threads", "default_name"]

LOCAL = "local"


@dataclass
class CalibrationRun:
    """What the device answered: its ``info`` document and one result (or error document) per spec."""

    device: str
    info: dict
    results: list  # [(KernelSpec, BenchResult | {"error": {...}})]
    quick: bool
    threads: int
    speedup: list  # speed-up at 1..N threads over 1 thread
    notes: list  # what was not measured, and why


def default_name(device: str) -> str:
    """``host`` for the local machine, else the device name with characters a file name dislikes replaced."""
    if device == LOCAL:
        return "host"
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in device).strip("-.") or "device"


def _timing_options(spec: KernelSpec, threads: int, quick: bool, power: bool = False,
                    sysfs_root: str = "/sys") -> dict:
    return {"runs": 20 if quick else 50, "warmup": 2 if quick else 5, "threads": spec.threads or threads,
            "duration_s": (0.15 if quick else 0.5) * (4 if power else 1), "power": "auto" if power else "none",
            "idle_s": (0.5 if quick else 1.0) if power else 0.0, "sysfs_root": sysfs_root}


def _requests(jobs: list[tuple[KernelSpec, str]], threads: int, quick: bool, sysfs_root: str = "/sys") -> str:
    lines = []
    for i, (spec, remote) in enumerate(jobs):
        power = spec.purpose == "memory" and spec.op == "gemm"  # one sample of power, when a sensor exists
        lines.append(json.dumps({"id": i, "op": "bench", "bundle": remote,
                                 **_timing_options(spec, threads, quick, power, sysfs_root)}))
    lines.append(json.dumps({"id": len(jobs), "op": "quit"}))
    return "\n".join(lines) + "\n"


def _parse_serve(stdout: str, count: int, where: str) -> list[dict]:
    """One document per request id: the result, or ``{"error": {...}}`` for a request the agent refused."""
    answers: dict = {}
    for line in stdout.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("id"), int):
            answers[doc["id"]] = doc["result"] if doc.get("ok") else {"error": doc.get("error") or {}}
    missing = [i for i in range(count) if i not in answers]
    if missing:
        raise DeviceError(f"{where}: the agent's serve session ended after {count - len(missing)} of {count} "
                          "micro-benchmarks (crashed or killed?); rerun with --quick or check the device")
    return [answers[i] for i in range(count)]


class LocalAgent:
    """The agent zipapp run as a subprocess of this Python."""

    label = LOCAL

    def __init__(self, python: str = sys.executable):
        from edgec.commands.bench import agent_cache_dir
        from edgec.device_agent import build_zipapp

        self.python = python
        self.agent = str(build_zipapp(agent_cache_dir()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def _run(self, argv: list[str], stdin: str | None = None, timeout: float = 3600.0):
        try:
            return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeviceTimeoutError(f"local agent: `{' '.join(argv[2:4])}` did not finish within {timeout:g} s; "
                                     "stopped (rerun with --quick?)") from None

    def info(self) -> dict:
        done = self._run([self.python, self.agent, "info"], timeout=120)
        return parse_output(done.stdout, done.returncode, done.stderr, where="local agent")

    def place(self, bundle: Path) -> str:
        return str(bundle.resolve())

    def serve(self, requests: str, count: int) -> list[dict]:
        done = self._run([self.python, self.agent, "serve"], stdin=requests)
        return _parse_serve(done.stdout, count, "local agent")

    def bench(self, bundle: str, options: BenchOptions) -> dict:
        done = self._run(bench_argv(self.agent, bundle, options, python=self.python), timeout=600)
        return parse_output(done.stdout, done.returncode, done.stderr, where="local agent")


class RemoteAgent:
    """The agent on an SSH device (edgec.deploy): pushed once, bundles pushed content-addressed."""

    def __init__(self, device_spec: str, inventory=None, ssh_options=None, timeout: float = 3600.0):
        from edgec.deploy.inventory import resolve_device
        from edgec.deploy.ssh import SshOptions

        self.device = resolve_device(device_spec, inventory)
        self.options = ssh_options or SshOptions()
        self.timeout = timeout
        self.label = self.device.name
        self.conn = None

    def __enter__(self):
        from edgec.deploy.push import install_agent
        from edgec.deploy.remote import agent_zipapp
        from edgec.deploy.ssh import connect

        self.conn = connect(self.device.ssh_target(), self.options).__enter__()
        try:
            self.agent = install_agent(self.conn, agent_zipapp())
        except BaseException:
            self.conn.close()
            raise
        return self

    def __exit__(self, *exc):
        if self.conn is not None:
            self.conn.__exit__(*exc)

    def info(self) -> dict:
        from edgec.deploy.remote import device_info

        return device_info(self.conn, self.device, self.agent)

    def place(self, bundle: Path) -> str:
        from edgec.deploy.push import push_bundle

        return push_bundle(self.conn, bundle).remote_dir

    def serve(self, requests: str, count: int) -> list[dict]:
        from edgec.deploy.push import remote_home

        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
            handle.write(requests)
        remote = f"{remote_home(self.conn)}/.edgec/calibrate-requests.jsonl"
        try:
            self.conn.put(handle.name, remote)
        finally:
            Path(handle.name).unlink()
        command = " ".join(shlex.quote(a) for a in (self.device.python, self.agent, "serve"))
        result = self.conn.run(f"{command} < {shlex.quote(remote)}", timeout=self.timeout,
                               what="agent serve (calibration)")
        return _parse_serve(result.stdout, count, self.conn.target.label)

    def bench(self, bundle: str, options: BenchOptions) -> dict:
        from edgec.deploy.remote import agent_call

        argv = bench_argv(self.agent, bundle, options, python=self.device.python)
        return agent_call(self.conn, self.device, argv, timeout=self.timeout, what="agent bench (memory probe)")


def _bundles(specs: list[KernelSpec], cache: Path, progress) -> list[Path]:
    from edgec._capture import captured_output

    out = []
    for i, spec in enumerate(specs):
        progress(f"generating micro-benchmark {i + 1}/{len(specs)}: {spec.key}")
        # TensorFlow's converter and onnxruntime.quantization print from C++: into a log, not over our output.
        with captured_output(cache / "build.log", enabled=not (cache / spec.key / "manifest.json").exists()):
            out.append(build_bundle(spec, cache / spec.key))
    return out


def _memory_probes(agent, specs: list[KernelSpec], places: list[str], threads: int, quick: bool) -> dict:
    """Fresh-process benches of the overhead (trivial) and memory probes: {spec key: result}."""
    found = {}
    for spec, place in zip(specs, places):
        # The memory model is onnxruntime's (the probes are ONNX models).
        if spec.runtime == "onnxruntime" and (spec.purpose == "memory" or (spec.purpose == "overhead"
                                                                           and spec.repeat == 1)):
            options = BenchOptions(runs=5, warmup=1, threads=threads, power="none", idle_s=0.0)
            try:
                found[spec.key] = agent.bench(place, options)
            except EdgecError as exc:
                found[spec.key] = {"error": {"type": type(exc).__name__, "message": str(exc)}}
    return found


def choose_threads(probes: list[tuple[KernelSpec, dict]]) -> tuple[int, list[float]]:
    """The fewest threads within 5% of the fastest probe, and the speed-up at 1..N threads over 1 thread.

    On a board whose cores scale this is every core; on a shared or throttled machine it can be fewer, and a
    runtime using more threads than that only waits on its slowest one.
    """
    times = sorted((spec.threads, doc["latency_ms"]["p50"]) for spec, doc in probes if "error" not in doc)
    if not times:
        raise DeviceError("calibration: every thread-scaling probe failed on the device; see `edgec bench` on "
                          "one of the bundles under ~/.edgec/calibration/bundles for the reason")
    best = min(t for _, t in times)
    chosen = min(n for n, t in times if t <= best * 1.05)
    speedup = [round(times[0][1] / t, 3) for _, t in times] if times[0][0] == 1 else []
    return chosen, speedup


def _run_specs(agent, specs: list[KernelSpec], cache: Path, threads: int, quick: bool, say,
               sysfs_root: str = "/sys") -> list[dict]:
    places = []
    for i, bundle in enumerate(_bundles(specs, cache, say)):
        say(f"placing bundle {i + 1}/{len(specs)} on {agent.label}")
        places.append(agent.place(bundle))
    say(f"running {len(specs)} micro-benchmarks on {agent.label}")
    answers = agent.serve(_requests(list(zip(specs, places)), threads, quick, sysfs_root), len(specs))
    say("memory probes (one process each)")
    fresh = _memory_probes(agent, specs, places, threads, quick)
    return [{**answer, "fresh": fresh.get(spec.key)} for spec, answer in zip(specs, answers)]


def calibrate(device: str = LOCAL, *, quick: bool = False, threads: int | None = None, inventory=None,
              ssh_options=None, cache_dir: Path | None = None, progress=None,
              sysfs_root: str = "/sys") -> CalibrationRun:
    """Run the suite on ``device`` (``local``, ``user@host[:port]`` or an inventory name).

    ``threads``: runtime threads of the kernel tables; by default the thread-scaling probes choose it (given, the
    probes are skipped and ``thread_speedup`` stays empty). ``sysfs_root``: where the device's power sensors
    are (tests: a fake tree).
    """
    say = progress or (lambda message: None)
    from edgec.deploy.inventory import edgec_home

    cache = Path(cache_dir or edgec_home() / "calibration" / "bundles")
    agent = LocalAgent() if device == LOCAL else RemoteAgent(device, inventory, ssh_options)
    with agent:
        say(f"asking the agent on {agent.label} what it has")
        info = agent.info()
        runtimes, notes = _runtimes(info, agent.label)
        cpu = info.get("cpu") or {}
        cores = int(cpu.get("cores_usable") or cpu.get("cores") or 1)
        probes, probe_docs, speedup = [], [], []
        if threads is None:  # measure the scaling, and take the fewest threads that reach the best speed
            probes = thread_probes(quick, cores, runtimes[0])
            say("thread scaling")
            probe_docs = _run_specs(agent, probes, cache, cores, quick, say)
            threads, speedup = choose_threads(list(zip(probes, probe_docs)))
        specs = suite(quick=quick, runtimes=runtimes)
        docs = _run_specs(agent, specs, cache, threads, quick, say, sysfs_root)
    results = list(zip(probes, probe_docs)) + list(zip(specs, docs))
    return CalibrationRun(device=agent.label, info=info, results=results, quick=quick, threads=threads,
                          speedup=speedup, notes=notes)


def _runtimes(info: dict, label: str) -> tuple[tuple, list]:
    """The runtimes to measure (those the device has; the first one is primary), and notes on the others."""
    from edgec.targets.microbench_tflite import available

    have = info.get("runtimes") or {}
    runtimes, notes = [], []
    if have.get("onnxruntime"):
        runtimes.append("onnxruntime")
    else:
        notes.append("onnxruntime not measured: the device has no onnxruntime (and so no memory calibration)")
    if have.get("litert") and available():
        runtimes.append("litert")
    elif have.get("litert"):
        notes.append("litert not measured: TensorFlow (the TFLite converter) is not installed on this host")
    else:
        notes.append("litert not measured: the device has no LiteRT/TFLite runtime")
    if not runtimes:
        raise UsageError(f"{label}: no runtime the calibration suite can drive; install one for the agent's "
                         "Python on the device (`python3 -m pip install numpy onnxruntime`, or ai-edge-litert "
                         "with TensorFlow on this host to build the .tflite suite)")
    return tuple(runtimes), notes


def _guess_base(info: dict) -> str:
    machine = str((info.get("platform") or {}).get("machine") or "")
    if machine in ("x86_64", "AMD64"):
        return "x86-avx2"
    return "rpi4"  # the most conservative ARM board profile


def _device_tables(info: dict, base: str) -> dict:
    """cpu/runtime tables of what the device reported, over its base profile."""
    from edgec.targets import load_profile

    profile = load_profile(base)
    have = [r for r in profile.runtime.available if (info.get("runtimes") or {}).get(r)] or ["onnxruntime"]
    preferred = profile.runtime.preferred if profile.runtime.preferred in have else have[0]
    cpu = info.get("cpu") or {}
    tables = {"runtime": {"preferred": preferred, "available": have,
                          "format": "onnx" if preferred == "onnxruntime" else "tflite"}}
    cores = cpu.get("cores_usable") or cpu.get("cores")
    if cores:
        tables["cpu"] = {"cores": int(cores), **({"model": str(cpu["model"])} if cpu.get("model") else {})}
        tables["runtime"]["threads"] = int(cores)
    return tables


def calibrate_target(device: str = LOCAL, name: str | None = None, base: str | None = None, *,
                     quick: bool = False, threads: int | None = None, inventory=None, ssh_options=None,
                     progress=None, sysfs_root: str = "/sys") -> tuple[Path, dict]:
    """Calibrate ``device`` and write the overlay ``$EDGEC_HOME/targets/NAME.toml``; returns (path, document)."""
    from edgec.deploy.inventory import edgec_home
    from edgec.targets import user_targets_dir
    from edgec.targets.overlay import build_overlay, measured_tables, write_overlay

    cache = edgec_home() / "calibration" / "bundles"
    run = calibrate(device, quick=quick, threads=threads, inventory=inventory, ssh_options=ssh_options,
                    cache_dir=cache, progress=progress, sysfs_root=sysfs_root)
    name = name or default_name(device)
    if device == LOCAL:
        from edgec.targets.host import detect_host

        detected = detect_host()
        base = base or detected["base"]
        extra = {k: detected[k] for k in ("cpu", "memory", "runtime", "power") if k in detected}
    else:
        if base is None:
            base = _inventory_target(device, inventory) or _guess_base(run.info)
        extra = _device_tables(run.info, base)
    if base == name:
        raise UsageError(f"--as {name}: an overlay cannot extend itself; give --base another profile")
    extra.setdefault("runtime", {})["threads"] = run.threads
    doc = build_overlay(name, base, measured_tables(run, cache), extra)
    return write_overlay(doc, user_targets_dir()), doc


def _inventory_target(device: str, inventory) -> str | None:
    from edgec.deploy.inventory import resolve_device

    try:
        return resolve_device(device, inventory).target
    except EdgecError:
        return None
