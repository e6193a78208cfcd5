"""The profile overlay a calibration writes: ``base = "<profile>"`` plus ``[performance.measured]`` tables.

``measured_tables(run)`` turns the agent's answers into the tables (schema: ``MeasuredSpec`` in profile.py);
``write_overlay`` writes ``$EDGEC_HOME/targets/NAME.toml`` (default ``~/.edgec/targets``) through a temporary
file that must load as a profile before it is renamed into place, so a bad overlay never replaces a good one.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from edgec.errors import DeviceError, TargetError
from edgec.targets.microbench import op_cost

__all__ = ["build_overlay", "dump_toml", "measured_tables", "write_overlay"]


def _p50(doc: dict) -> float:
    """The typical time of a run: the median, or 1.05 x the fastest run when the runs were disturbed.

    On a shared or busy machine a run longer than a scheduler slice is often preempted (seen here: the median
    of a 2.6 ms chain 20x its minimum); the median then measures the neighbours, not the kernel.
    """
    lat = doc["latency_ms"]
    p50, p90, fastest = float(lat["p50"]), float(lat["p90"]), float(lat["min"])
    return p50 if p90 <= 1.5 * p50 else min(p50, 1.05 * fastest)


def _spread(doc: dict) -> float:
    lat = doc["latency_ms"]
    return round((lat["p90"] - lat["p50"]) / lat["p50"], 4) if lat["p50"] else 0.0


def _stats(model_path: Path):
    from edgec.targets.estimate import load_onnx
    from edgec.targets.model_stats import analyse

    return analyse(load_onnx(model_path))


def _overheads(results: list, runtime: str = "onnxruntime") -> tuple[float, float]:
    probes = [(s, d) for s, d in results if s.purpose == "overhead" and s.runtime == runtime and "error" not in d]
    single = [d for s, d in probes if s.repeat == 1]
    chain = [(s, d) for s, d in probes if s.repeat > 1]
    if not single or not chain:
        raise DeviceError("calibration: the overhead probes failed on the device; see `edgec bench` on one of "
                          "the bundles under ~/.edgec/calibration/bundles for the reason")
    one, (spec, many) = _p50(single[0]), chain[0]
    node = max((_p50(many) - one) / (spec.repeat - 1), 0.0)
    return max(one - node, 0.0), node


def _kernel_row(spec, doc: dict, overhead: float) -> dict:
    flops, nbytes = op_cost(spec.op, spec.shape, spec.expand)
    row = {"op": spec.op, "runtime": spec.runtime, "precision": spec.precision, "shape": list(spec.shape),
           "cout": spec.cout, "flops": flops, "bytes": nbytes, "repeat": spec.repeat}
    if "error" in doc:
        error = doc["error"]
        return {**row, "ms": 0.0, "spread": 0.0, "status": "unsupported",
                "note": f"{error.get('type')}: {str(error.get('message'))[:160]}"}
    # Never below 2% of the chain's median per op: timer noise must not make a kernel free.
    ms = max((_p50(doc) - overhead) / spec.repeat, 0.02 * _p50(doc) / spec.repeat)
    return {**row, "ms": round(ms, 6), "spread": _spread(doc), "status": "ok", "note": ""}


def _memory_fit(results: list, cache: Path) -> tuple[float, float, float, list]:
    """(base bytes, weights factor, arena factor) from the fresh-process probes; notes on what was clamped."""
    import numpy as np

    points = []
    for spec, doc in results:
        fresh = doc.get("fresh")
        if not fresh or "error" in fresh or not (fresh.get("memory") or {}).get("rss_increase_bytes"):
            continue
        stats = _stats(cache / spec.key / "model.onnx")
        points.append((stats.weights_bytes, stats.arena_bytes, float(fresh["memory"]["rss_increase_bytes"])))
    notes = []
    if len(points) < 3:
        return 0.0, 1.0, 1.0, ["memory probes incomplete: base 0, factors 1 (uncalibrated)"]
    a = np.array([[1.0, w, r] for w, r, _ in points])
    b = np.array([m for _, _, m in points])
    base, wf, af = (float(v) for v in np.linalg.lstsq(a, b, rcond=None)[0])
    clamped = (max(base, 0.0), min(max(wf, 0.5), 4.0), min(max(af, 0.5), 4.0))
    if clamped != (base, wf, af):
        notes.append(f"memory fit clamped: base {base:.0f}, weights x{wf:.2f}, arena x{af:.2f}")
    return (*clamped, notes)


def _bandwidth(results: list, overhead: float, runtime: str = "onnxruntime") -> float:
    """GB/s of the fastest elementwise chain of ``runtime`` (read + write of every element)."""
    best = 0.0
    for spec, doc in results:
        if (spec.op == "eltwise" and spec.precision == "fp32" and spec.runtime == runtime
                and "error" not in doc and spec.shape[1] > 1):
            seconds = max(_p50(doc) - overhead, 0.05 * _p50(doc)) / 1000
            best = max(best, op_cost(spec.op, spec.shape)[1] * spec.repeat / seconds / 1e9)
    return round(best, 3) or 1.0


def _power(results: list) -> tuple[float, float, str]:
    for _, doc in results:
        power = doc.get("power") or {}
        if power.get("measured") and power.get("active_watts"):
            return float(power.get("idle_watts") or 0.0), float(power["active_watts"]), str(power.get("source"))
    return 0.0, 0.0, "none"


def measured_tables(run, cache: Path) -> dict:
    """The ``[performance.measured]`` tables of a CalibrationRun (``cache``: where its bundles are)."""
    results = run.results
    runtimes = sorted({s.runtime for s, _ in results})
    primary = "onnxruntime" if "onnxruntime" in runtimes else runtimes[0]
    overhead, node = _overheads(results, primary)
    per_runtime = {}
    for runtime in runtimes:
        try:
            per_runtime[runtime] = _overheads(results, runtime)[0]
        except DeviceError:  # its kernels failed too (status unsupported); onnxruntime's overhead stands in
            per_runtime[runtime] = overhead
    kernels = [_kernel_row(s, d, per_runtime[s.runtime]) for s, d in results if s.purpose == "kernel"]
    loads = [d["timing"]["load_s"] * 1000 for s, d in results if s.purpose == "overhead" and "error" not in d]
    base, wf, af, notes = _memory_fit(results, cache)
    idle, active, source = _power(results)
    info = run.info
    cpu, plat = info.get("cpu") or {}, info.get("platform") or {}
    identity = {k: str(v) for k, v in {**plat, "cpu_model": cpu.get("model"), "cores": cpu.get("cores"),
                                       "python": info.get("python"), "numpy": info.get("numpy")}.items()
                if v is not None}
    failed = [k for k in kernels if k["status"] != "ok"]
    if failed:
        notes.append(f"{len(failed)} kernel(s) the device could not run (status unsupported)")
    notes.extend(run.notes)
    return {
        "schema": 1,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": run.device,
        "quick": run.quick,
        "agent_version": str(info.get("agent_version") or ""),
        "device_identity": identity,
        "runtimes": {k: str(v) for k, v in sorted((info.get("runtimes") or {}).items()) if v},
        "notes": notes,
        "system": {"overhead_ms": round(overhead, 6), "node_overhead_ms": round(node, 6),
                   "bandwidth_gbps": _bandwidth(results, overhead, primary),
                   "load_ms": round(statistics.median(loads), 3) if loads else 0.0,
                   "memory_base_bytes": round(base), "memory_weights_factor": round(wf, 4),
                   "memory_arena_factor": round(af, 4), "threads": run.threads, "thread_speedup": list(run.speedup),
                   "idle_watts": idle, "active_watts": active, "power_source": source,
                   "runtime_overhead_ms": {r: round(ms, 6) for r, ms in per_runtime.items()}},
        "kernels": kernels,
    }


def build_overlay(name: str, base: str, measured: dict, extra: dict | None = None) -> dict:
    """The overlay document: name, base, description, ``extra`` tables (cpu, memory, runtime) and measured."""
    doc = {"name": name, "base": base,
           "description": f"{base} calibrated on {measured['device']} ({measured['date'][:10]}"
                          f"{', quick suite' if measured['quick'] else ''})"}
    doc.update(extra or {})
    doc["performance"] = {"measured": measured}
    return doc


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "0.0"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_toml(data: dict, prefix: str = "") -> str:
    """TOML text of nested dicts, lists of scalars and lists of dicts (arrays of tables)."""
    lines, tables, arrays = [], [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            arrays.append((key, value))
        else:
            lines.append(f"{key} = {_value(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for key, value in tables:
        body = dump_toml(value, f"{prefix}{key}.")
        if not value or any(not isinstance(v, (dict, list)) or not v
                            or (isinstance(v, list) and not all(isinstance(i, dict) for i in v))
                            for v in value.values()):  # an empty table still needs its header
            out += f"\n[{prefix}{key}]\n"
        out += body
    for key, items in arrays:
        for item in items:
            out += f"\n[[{prefix}{key}]]\n" + dump_toml(item, f"{prefix}{key}.")
    return out


def write_overlay(doc: dict, folder: Path) -> Path:
    """Write ``folder/NAME.toml`` atomically after checking that it loads as a profile; returns its path."""
    from edgec.targets import load_profile

    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{doc['name']}.toml"
    header = "# Written by `edgec targets calibrate`; measured tables under [performance.measured].\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{doc['name']}.", suffix=".toml", dir=folder)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(header + dump_toml(doc))
        try:
            load_profile(tmp)
        except TargetError as exc:
            raise TargetError(f"calibration produced an overlay that does not load ({exc}); nothing written") from None
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final
