"""Cluster benchmark: a 6-variant sweep on this machine without Ray, then on a 2-node Ray cluster, same run.

Baseline: ``edgec sweep`` without ``--cluster`` (one process, variants one after another). The cluster is a
head and a worker node started here as separate process groups (1 CPU each), so both paths share the same 2
cores: a speed-up is not expected on this machine. What the benchmark measures is what a cluster costs and would
give: Ray's own overhead per task (an empty task's round trip, and each compile task's time on its node against
the same compile without Ray), and a projection for two real machines of this size from the measured task times
(longest-first scheduling of the measured compile times over two nodes, plus the measured per-task overhead).

Goals (issue 18): every variant's outcome the same with and without the cluster, and Ray's overhead per task under
10% of a compile; the speed ratio is reported, not gated (both paths share the same 2 cores here).
Run: ``.venv/bin/python -m benchmarks.cluster``. Writes build/bench/cluster.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "farm"))
VARIANTS = "fp32,int8,prune30,prune50,sparse50,prune30+int8"


def _model(work: Path) -> tuple[Path, Path]:
    import numpy as np
    import torch

    from edgec.examples.torch_models import tiny_mobilenet

    path = work / "tiny_mobilenet.onnx"
    torch.onnx.export(tiny_mobilenet(), (torch.randn(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "N"}})
    calib = work / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((32, 3, 32, 32)).astype(np.float32))
    return path, calib


def _sweep(work: Path, model: Path, calib: Path, name: str, cluster: str | None) -> dict:
    argv = [sys.executable, "-m", "edgec", "sweep", str(model), "--variants", VARIANTS, "--calibration", str(calib),
            "--max-accuracy-drop", "100", "--runs", "20", "--warmup", "2", "--workdir", str(work / name),
            "--results", str(work / f"{name}.db"), "-o", str(work / f"{name}.html"), "--json"]
    if cluster:
        argv += ["--cluster", cluster]
    env = {**os.environ, "HOME": str(work / "home"), "EDGEC_HOME": str(work / "home")}
    env.pop("EDGEC_CLUSTER", None)
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 8):  # 8: a variant failed, which the outcomes say; anything else is the sweep's
        raise RuntimeError(f"sweep {name} failed ({done.returncode}): {done.stderr[-800:]}")
    outcomes = json.loads(done.stdout)["outcomes"]
    return {"seconds": seconds, "ok": sum(o["status"] == "ok" for o in outcomes), "outcomes": outcomes,
            "statuses": {o["label"]: o["status"] for o in outcomes},
            "errors": {o["label"]: o["error"] for o in outcomes if o.get("error")}}


def _task_overhead(address: str, count: int = 40) -> float:
    """Mean round trip of an empty Ray task on the cluster, in seconds (after one warm-up)."""
    code = ("import ray,sys,time; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False)\n"
            "f = ray.remote(num_cpus=1)(lambda: None)\nray.get(f.remote())\nt = time.perf_counter()\n"
            f"for _ in range({count}): ray.get(f.remote())\nprint((time.perf_counter() - t) / {count})")
    out = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True, timeout=600,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _compile_times(work: Path, model: Path, calib: Path) -> dict[str, float]:
    """Each variant compiled alone, without Ray: the task times a real node would spend."""
    from edgec import api
    from edgec.api import parse_variants

    times = {}
    for variant in parse_variants(VARIANTS):
        started = time.perf_counter()
        try:
            api.compile(str(model), work / "alone" / variant.label, target="host", force=True,
                        calibration=str(calib), max_accuracy_drop=100, **variant.options)
        except Exception as exc:
            print(f"  {variant.label}: {exc}")
        times[variant.label] = time.perf_counter() - started
    return times


def _two_machines(times: dict[str, float], overhead: float) -> float:
    """Makespan of the measured task times on two nodes, longest first, each task paying the overhead."""
    nodes = [0.0, 0.0]
    for seconds in sorted(times.values(), reverse=True):
        nodes[nodes.index(min(nodes))] += seconds + overhead
    return max(nodes)


def main(argv: list[str] | None = None) -> dict:
    from ray_testbed import RayCluster

    from benchmarks._goals import goal, print_goals

    work = Path(tempfile.mkdtemp(prefix="edgec-bench-cluster-"))
    (work / "home").mkdir()  # HOME and EDGEC_HOME of both paths and of the nodes
    model, calib = _model(work)
    local = _sweep(work, model, calib, "local", None)
    (work / "ray").mkdir()
    ray = RayCluster(work / "ray", env={"HOME": str(work / "home"), "EDGEC_HOME": str(work / "home"),
                                        "PYTHONPATH": str(REPO)})
    try:
        ray.start_node("head", {"site:a": 1}, head=True)
        ray.start_node("worker", {"site:b": 1})
        ray.wait_nodes(2)
        on_cluster = _sweep(work, model, calib, "cluster", ray.address)
        overhead = _task_overhead(ray.address)
    finally:
        ray.stop()
    times = _compile_times(work, model, calib)
    nodes = sorted({o["compile_node"][:8] for o in on_cluster["outcomes"] if o.get("compile_node")})
    result = {
        "variants": VARIANTS, "local_s": round(local["seconds"], 2), "cluster_s": round(on_cluster["seconds"], 2),
        "cluster_over_local": round(on_cluster["seconds"] / local["seconds"], 3),
        "results_ok": {"local": local["ok"], "cluster": on_cluster["ok"]}, "nodes_used": nodes,
        "statuses": {"local": local["statuses"], "cluster": on_cluster["statuses"]},
        "ray_overhead_per_task_ms": round(overhead * 1000, 2),
        "compile_s": {k: round(v, 2) for k, v in times.items()},
        "overhead_share_of_mean_compile": round(overhead / (sum(times.values()) / len(times)), 4),
        "projected_two_machines_s": round(_two_machines(times, overhead), 2),
        "projected_speedup_over_one": round(sum(times.values()) / _two_machines(times, overhead), 2),
    }
    print(f"6-variant sweep: local {result['local_s']} s, 2-node cluster on the same 2 cores "
          f"{result['cluster_s']} s ({result['cluster_over_local']}x); nodes used: {', '.join(nodes)}")
    print(f"Ray overhead per task {result['ray_overhead_per_task_ms']} ms = "
          f"{result['overhead_share_of_mean_compile'] * 100:.2f}% of a mean compile "
          f"({sum(times.values()) / len(times):.2f} s)")
    print(f"two real machines (projected from the measured task times): {result['projected_two_machines_s']} s of "
          f"compiling, {result['projected_speedup_over_one']}x one machine")
    same = local["statuses"] == on_cluster["statuses"]
    print(f"variant outcomes: {local['statuses']}")
    for name, run in (("without Ray", local), ("on the cluster", on_cluster)):
        for label, error in run["errors"].items():
            print(f"  {label} {name}: {error}")
    goals = [goal("the cluster gives every variant the outcome it has without Ray, each stored once", same,
                  f"local {local['statuses']}, cluster {on_cluster['statuses']}"),
             goal("Ray's overhead per task under 10% of a mean compile",
                  result["overhead_share_of_mean_compile"] < 0.1,
                  f"{result['overhead_share_of_mean_compile'] * 100:.2f}%")]
    print_goals(goals)
    result["goals"] = goals
    out = REPO / "build" / "bench" / "cluster.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
