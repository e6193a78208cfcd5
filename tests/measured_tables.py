"""Measured-table documents (what `edgec targets calibrate` writes) for estimate and overlay tests: shared by
unit and integration tests, so that neither imports the other's test modules."""

from __future__ import annotations

__all__ = ["kernel_row", "measured_doc"]


def kernel_row(op="conv3x3", precision="fp32", shape=(1, 16, 32, 32), ms=0.05, runtime="onnxruntime", **extra):
    from edgec.targets.microbench import op_cost

    flops, nbytes = op_cost(op, shape)
    return {"op": op, "runtime": runtime, "precision": precision, "shape": list(shape), "cout": shape[1],
            "flops": flops, "bytes": nbytes, "repeat": 2, "ms": ms, "spread": 0.05, "status": "ok", "note": "",
            **extra}


def measured_doc(kernels=None) -> dict:
    return {
        "schema": 1, "date": "2026-11-27T08:00:00+00:00", "device": "testboard", "quick": True,
        "agent_version": "0123456789abcdef", "device_identity": {"machine": "aarch64", "cores": "4"},
        "runtimes": {"onnxruntime": "1.32.0"}, "notes": ["a note"],
        "system": {"overhead_ms": 0.004, "node_overhead_ms": 0.0003, "bandwidth_gbps": 8.0, "load_ms": 2.0,
                   "memory_base_bytes": 30_000_000, "memory_weights_factor": 1.5, "memory_arena_factor": 1.2,
                   "threads": 4, "thread_speedup": [1.0, 1.8, 2.5, 3.1], "idle_watts": 0.0, "active_watts": 0.0,
                   "power_source": "none"},
        "kernels": kernels if kernels is not None else [kernel_row(), kernel_row("gemm", shape=(1, 256), ms=0.01)],
    }
