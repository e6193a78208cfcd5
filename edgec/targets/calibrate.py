"""``edgec targets calibrate``: run the micro-benchmark suite through the device agent and write a profile overlay.

The agent is reached through an ``AgentRunner`` (``edgec.device_agent.client``) that the caller opens and hands
in: ``edgec.api.calibrate_target`` opens ``edgec.deploy``'s local or SSH runner. Handing it in keeps this
package free of ``edgec.deploy`` (targets sit below deploy: deploy reads profiles, never the other way), while
the suite, the thread choice and the overlay stay target knowledge, here. Bundles are placed by the runner (on
an SSH device: pushed content-addressed, so a second calibration sends nothing new).

Timings go through one ``serve`` batch (JSON lines on the agent's stdin), so the runtime is imported once. The memory probes run as separate ``bench`` processes: a process's peak RSS only grows, so probes sharing
one would measure each other. The overlay is written by ``edgec.targets.overlay``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgec._capture import captured_output
from edgec.device_agent.client import AgentRunner
from edgec.device_agent.options import BenchOptions
from edgec.errors import DeviceError, EdgecError, UsageError
from edgec.settings import HOST_PROFILE, LOCAL_DEVICE, edgec_home
from edgec.targets import load_profile, user_targets_dir
from edgec.targets.host import detect_host
from edgec.targets.microbench import KernelSpec, build_bundle, suite, thread_probes
from edgec.targets.microbench_tflite import available as tflite_available
from edgec.targets.overlay import build_overlay, measured_tables, write_overlay

__all__ = ["CalibrationRun", "calibrate", "calibrate_target", "choose_threads", "default_name"]


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
    if device == LOCAL_DEVICE:
        return HOST_PROFILE
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in device).strip("-.") or "device"


def _timing_options(spec: KernelSpec, threads: int, quick: bool, power: bool = False,
                    sysfs_root: str = "/sys") -> dict:
    return {"runs": 20 if quick else 50, "warmup": 2 if quick else 5, "threads": spec.threads or threads,
            "duration_s": (0.15 if quick else 0.5) * (4 if power else 1), "power": "auto" if power else "none",
            "idle_s": (0.5 if quick else 1.0) if power else 0.0, "sysfs_root": sysfs_root}


def _requests(jobs: list[tuple[KernelSpec, str]], threads: int, quick: bool, sysfs_root: str = "/sys") -> list[dict]:
    requests = []
    for spec, placed in jobs:
        power = spec.purpose == "memory" and spec.op == "gemm"  # one sample of power, when a sensor exists
        requests.append({"op": "bench", "bundle": placed, **_timing_options(spec, threads, quick, power, sysfs_root)})
    return requests


def _bundles(specs: list[KernelSpec], cache: Path, progress) -> list[Path]:
    out = []
    for i, spec in enumerate(specs):
        progress(f"generating micro-benchmark {i + 1}/{len(specs)}: {spec.key}")
        # TensorFlow's converter and onnxruntime.quantization print from C++: into a log, not over our output.
        with captured_output(cache / "build.log", enabled=not (cache / spec.key / "manifest.json").exists()):
            out.append(build_bundle(spec, cache / spec.key))
    return out


def _memory_probes(agent: AgentRunner, specs: list[KernelSpec], places: list[str], threads: int, quick: bool) -> dict:
    """Fresh-process benches of the overhead (trivial) and memory probes: {spec key: result}."""
    found = {}
    for spec, place in zip(specs, places):
        # The memory model is onnxruntime's (the probes are ONNX models).
        if spec.runtime == "onnxruntime" and (spec.purpose == "memory" or (spec.purpose == "overhead"
                                                                           and spec.repeat == 1)):
            options = BenchOptions(runs=5, warmup=1, threads=threads, power="none", idle_s=0.0)
            try:
                found[spec.key] = agent.bench(place, options, fresh=True)
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


def _run_specs(agent: AgentRunner, specs: list[KernelSpec], cache: Path, threads: int, quick: bool, say,
               sysfs_root: str = "/sys") -> list[dict]:
    places = []
    for i, bundle in enumerate(_bundles(specs, cache, say)):
        say(f"placing bundle {i + 1}/{len(specs)} on {agent.name}")
        places.append(agent.place(bundle))
    say(f"running {len(specs)} micro-benchmarks on {agent.name}")
    answers = agent.serve(_requests(list(zip(specs, places)), threads, quick, sysfs_root))
    say("memory probes (one process each)")
    fresh = _memory_probes(agent, specs, places, threads, quick)
    return [{**answer, "fresh": fresh.get(spec.key)} for spec, answer in zip(specs, answers)]


def calibrate(agent: AgentRunner, *, quick: bool = False, threads: int | None = None,
              cache_dir: Path | None = None, progress=None, sysfs_root: str = "/sys") -> CalibrationRun:
    """Run the suite through ``agent`` (an open ``AgentRunner``).

    ``threads``: runtime threads of the kernel tables; by default the thread-scaling probes choose it (given, the
    probes are skipped and ``thread_speedup`` stays empty). ``sysfs_root``: where the device's power sensors
    are (tests: a fake tree).
    """
    say = progress or (lambda message: None)
    cache = Path(cache_dir or edgec_home() / "calibration" / "bundles")
    say(f"asking the agent on {agent.name} what it has")
    info = agent.info()
    runtimes, notes = _runtimes(info, agent.name)
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
    return CalibrationRun(device=agent.name, info=info, results=results, quick=quick, threads=threads,
                          speedup=speedup, notes=notes)


def _runtimes(info: dict, label: str) -> tuple[tuple, list]:
    """The runtimes to measure (those the device has; the first one is primary), and notes on the others."""
    have = info.get("runtimes") or {}
    runtimes, notes = [], []
    if have.get("onnxruntime"):
        runtimes.append("onnxruntime")
    else:
        notes.append("onnxruntime not measured: the device has no onnxruntime (and so no memory calibration)")
    if have.get("litert") and tflite_available():
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


def calibrate_target(agent: AgentRunner, name: str | None = None, base: str | None = None, *,
                     quick: bool = False, threads: int | None = None, progress=None,
                     sysfs_root: str = "/sys") -> tuple[Path, dict]:
    """Calibrate the device behind ``agent`` and write the overlay ``$EDGEC_HOME/targets/NAME.toml``; returns
    (path, document)."""
    doc = measure_overlay(agent, name, base, quick=quick, threads=threads, progress=progress, sysfs_root=sysfs_root)
    return write_overlay(doc, user_targets_dir()), doc


def measure_overlay(agent: AgentRunner, name: str | None = None, base: str | None = None, *,
                    quick: bool = False, threads: int | None = None, progress=None, sysfs_root: str = "/sys") -> dict:
    """The overlay document of the device behind ``agent`` (measured, not written): what a cluster node sends
    back to the driver, which writes it."""
    cache = edgec_home() / "calibration" / "bundles"
    run = calibrate(agent, quick=quick, threads=threads, cache_dir=cache, progress=progress, sysfs_root=sysfs_root)
    name = name or default_name(agent.name)
    if agent.name == LOCAL_DEVICE:
        detected = detect_host()
        base = base or detected["base"]
        extra = {k: detected[k] for k in ("cpu", "memory", "runtime", "power") if k in detected}
    else:
        base = base or agent.target or _guess_base(run.info)
        extra = _device_tables(run.info, base)
    if base == name:
        raise UsageError(f"--as {name}: an overlay cannot extend itself; give --base another profile")
    extra.setdefault("runtime", {})["threads"] = run.threads
    return build_overlay(name, base, measured_tables(run, cache), extra)
