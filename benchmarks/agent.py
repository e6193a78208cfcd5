"""The device agent against a bare runtime loop on the same model, in the same run.

For each model: the median latency the agent reports (its zipapp, run as on a device) against the median of a
plain ``session.run`` loop in a separate process with the same runtime settings (goal: within 3%), repeated in
alternation so that drift on a shared machine hits both alike; the start-up time to the first result (process
start to exit, one inference); and peak memory of the agent over the bare runtime.

Run: ``.venv/bin/python -m benchmarks.agent``. Writes build/bench/agent.json.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._goals import goal, print_goals
from edgec.examples.onnx_models import onnx_mlp

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "build" / "bench" / "agent.json"
REPEATS = 8
THREADS = 1  # one thread: the machine's cores are shared; the comparison, not the speed, is the point

# A bare loop per runtime: load, first run, warm-up, timed runs. Prints p50 (ms), first-result time, peak RSS.
_BARE_COMMON = """
import json, statistics, sys, time
import numpy as np
model, ref, runs, warmup, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
with np.load(ref) as data:
    arrays = [data[k] for k in sorted(data.files, key=lambda name: int(name[1:]))]
"""
_BARE_TAIL = """
run()
for _ in range(warmup):
    run()
clock, lat = time.perf_counter_ns, []
for _ in range(runs):
    start = clock()
    run()
    lat.append(clock() - start)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]
print(json.dumps({"p50_ms": statistics.median(lat) / 1e6, "rss_peak_bytes": int(hwm) * 1024}))
"""
# How a careful user runs each runtime by hand: given model, arrays and threads, defines run().
BARE_SETUP = {
    "onnxruntime": """
import onnxruntime as ort
opts = ort.SessionOptions()
opts.log_severity_level = 3
opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
feeds = {i.name: a for i, a in zip(sess.get_inputs(), arrays)}
def run():
    return sess.run(None, feeds)
""",
    "litert": """
from ai_edge_litert.interpreter import Interpreter
interp = Interpreter(model_path=model, num_threads=threads)
interp.allocate_tensors()
pairs = [(d["index"], a) for d, a in zip(interp.get_input_details(), arrays)]
outs = [d["index"] for d in interp.get_output_details()]
def run():
    for index, a in pairs:
        interp.set_tensor(index, a)
    interp.invoke()
    return [interp.get_tensor(index) for index in outs]
""",
}
BARE = {name: _BARE_COMMON + setup + _BARE_TAIL for name, setup in BARE_SETUP.items()}


def _run_json(argv: list[str]) -> tuple[dict, float]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), wall


def _agent(agent: Path, bundle: Path, runs: int, warmup: int, power: tuple = ("--power", "none")) -> tuple[dict, float]:
    return _run_json([sys.executable, str(agent), "bench", str(bundle), "--runs", str(runs), "--warmup", str(warmup),
                      "--threads", str(THREADS), "--idle", "0", *power])


def _fake_hwmon(root: Path) -> tuple:
    """A fake INA219 tree: the agent samples it on its thread at the default 50 Hz during the timed window."""
    folder = root / "class" / "hwmon" / "hwmon0"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "name").write_text("ina219\n")
    (folder / "power1_input").write_text("3000000\n")
    return ("--power", "hwmon", "--sysfs-root", str(root))


def _bare(runtime: str, bundle: Path, runs: int, warmup: int) -> tuple[dict, float]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    return _run_json([sys.executable, "-c", BARE[runtime], str(bundle / manifest["model_file"]),
                      str(bundle / manifest["reference"]["inputs"]), str(runs), str(warmup), str(THREADS)])


def compare(name: str, runtime: str, agent: Path, bundle: Path, runs: int, power: tuple = ("--power", "none")) -> dict:
    """Alternate agent and bare runs REPEATS times; medians of their medians, start-up and memory."""
    agent_p50, bare_p50, agent_rss, bare_rss = [], [], [], []
    for i in range(REPEATS):
        # ABBA order: whichever goes first in a pair has no systematic edge
        if i % 2:
            bare, _ = _bare(runtime, bundle, runs, 20)
            doc, _ = _agent(agent, bundle, runs, 20, power)
        else:
            doc, _ = _agent(agent, bundle, runs, 20, power)
            bare, _ = _bare(runtime, bundle, runs, 20)
        agent_p50.append(doc["latency_ms"]["p50"])
        bare_p50.append(bare["p50_ms"])
        agent_rss.append(doc["memory"]["rss_peak_bytes"])
        bare_rss.append(bare["rss_peak_bytes"])
    agent_start = statistics.median(_agent(agent, bundle, 1, 0)[1] for _ in range(REPEATS))
    bare_start = statistics.median(_bare(runtime, bundle, 1, 0)[1] for _ in range(REPEATS))
    a, b = statistics.median(agent_p50), statistics.median(bare_p50)
    return {"model": name, "runtime": runtime, "runs": runs, "repeats": REPEATS, "threads": THREADS,
            "agent_p50_ms": a, "bare_p50_ms": b, "p50_ratio": a / b,
            "pair_ratios": [round(x / y, 4) for x, y in zip(agent_p50, bare_p50)],
            # interference from other work only ever adds time: the best repeat of each is the steadier comparison
            "best_p50_ratio": min(agent_p50) / min(bare_p50), "within_3pct": abs(a / b - 1) <= 0.03,
            "agent_startup_s": agent_start, "bare_startup_s": bare_start, "startup_ratio": agent_start / bare_start,
            "agent_rss_peak_mib": statistics.median(agent_rss) / 2**20,
            "bare_rss_peak_mib": statistics.median(bare_rss) / 2**20,
            "rss_over_bare_mib": (statistics.median(agent_rss) - statistics.median(bare_rss)) / 2**20}


def _bare_in_process(runtime: str, bundle: Path):
    """The same bare run as the subprocess baseline (BARE_SETUP), set up in this process."""
    import numpy as np

    manifest = json.loads((bundle / "manifest.json").read_text())
    with np.load(bundle / manifest["reference"]["inputs"]) as data:
        arrays = [data[f"i{k}"] for k in range(len(data.files))]
    namespace = {"model": str(bundle / manifest["model_file"]), "arrays": arrays, "threads": THREADS}
    exec(BARE_SETUP[runtime], namespace)  # our own constant source, not input
    return namespace["run"]


def compare_in_process(name: str, runtime: str, bundle: Path, runs: int) -> dict:
    """The agent's code (run_bench) and a bare loop alternating in ONE process: no process-to-process variance."""
    from edgec.device_agent import run_bench

    bare_run = _bare_in_process(runtime, bundle)
    agent_p50, bare_p50 = [], []
    for _ in range(REPEATS):
        doc = run_bench(bundle, {"runs": runs, "warmup": 20, "threads": THREADS, "power": "none", "idle_s": 0})
        agent_p50.append(doc["latency_ms"]["p50"])
        for _ in range(20):
            bare_run()
        lat = []
        for _ in range(runs):
            start = time.perf_counter_ns()
            bare_run()
            lat.append(time.perf_counter_ns() - start)
        bare_p50.append(statistics.median(lat) / 1e6)
    a, b = statistics.median(agent_p50), statistics.median(bare_p50)
    return {"model": name, "runtime": f"{runtime} (1 process)", "runs": runs, "repeats": REPEATS, "threads": THREADS,
            "agent_p50_ms": a, "bare_p50_ms": b, "p50_ratio": a / b, "within_3pct": abs(a / b - 1) <= 0.03,
            "pair_ratios": [round(x / y, 4) for x, y in zip(agent_p50, bare_p50)],
            "best_p50_ratio": min(agent_p50) / min(bare_p50)}


def _bundles(work: Path) -> list[tuple[str, str, Path, int, str]]:
    """(name, runtime, bundle, runs, skip reason) for each model compared."""
    from edgec import api

    cases = []
    for name, width, depth, runs in (("mlp-64x2 (overhead-bound)", 64, 2, 3000), ("mlp-1024x4", 1024, 4, 400)):
        source = onnx_mlp(work / f"mlp{width}.onnx", width, depth)
        cases.append((name, "onnxruntime", api.compile(str(source), work / f"mlp{width}.bundle", target="host").path,
                      runs, ""))
        try:
            bundle = api.compile(str(source), work / f"mlp{width}-tflite.bundle", target="host", format="tflite").path
            cases.append((name, "litert", bundle, runs, ""))
        except Exception as exc:  # the TFLite emitter is another issue's: report why the row is missing
            cases.append((name, "litert", Path(), runs, f"{type(exc).__name__}: {str(exc)[:120]}"))
    return cases


def _print(rows: list[dict]) -> None:
    head = f"{'model':<27}{'runtime':<22}{'agent p50':>11}{'bare p50':>11}{'ratio':>8}{'best':>7}" \
           f"{'start agent/bare':>20}{'RSS agent/bare MiB':>21}"
    print(head)
    print("-" * len(head))
    for r in rows:
        if "skipped" in r:
            print(f"{r['model']:<27}{r['runtime']:<22}  skipped: {r['skipped']}")
            continue
        line = (f"{r['model']:<27}{r['runtime']:<22}{r['agent_p50_ms']:>9.4f}ms{r['bare_p50_ms']:>9.4f}ms"
                f"{r['p50_ratio']:>8.3f}{r['best_p50_ratio']:>7.3f}")
        if "agent_startup_s" in r:
            line += (f"{r['agent_startup_s']:>9.3f}s/{r['bare_startup_s']:.3f}s"
                     f"{r['agent_rss_peak_mib']:>11.1f}/{r['bare_rss_peak_mib']:.1f}")
        print(line)


GOAL = 0.03  # the agent's median latency within 3% of a bare runtime loop's, in both directions


def main(argv: list[str] | None = None) -> dict:
    from edgec.device_agent import build_zipapp

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory(prefix="edgec-bench-agent-") as tmp:
        work = Path(tmp)
        agent = build_zipapp(work / "agent")
        rows = []
        for name, runtime, bundle, runs, skipped in _bundles(work):
            if skipped:
                rows.append({"model": name, "runtime": runtime, "skipped": skipped})
                continue
            rows.append(compare(name, runtime, agent, bundle, runs))
            rows.append(compare_in_process(name, runtime, bundle, runs))
            if runtime == "onnxruntime" and runs < 1000:  # the larger model again, power sampled on the thread
                row = compare(name, runtime, agent, bundle, runs, _fake_hwmon(work / "sysfs"))
                rows.append({**row, "runtime": "ort+power"})
    print(f"goal: agent p50 within {GOAL:.0%} of the bare loop's p50 (ratio in [{1 - GOAL:.2f}, {1 + GOAL:.2f}])")
    _print(rows)
    goals = [goal(f"{r['model']} / {r['runtime']}: agent p50 within {GOAL:.0%} of a bare loop",
                  abs(r["p50_ratio"] - 1) <= GOAL, f"ratio {r['p50_ratio']:.3f}")
             for r in rows if "skipped" not in r]
    print_goals(goals)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"benchmark": "agent", "rows": rows, "goals": goals}, indent=2) + "\n")
    print(f"written: {OUT.relative_to(REPO)}")
    return {"rows": rows, "goals": goals}


if __name__ == "__main__":
    main(sys.argv[1:])
