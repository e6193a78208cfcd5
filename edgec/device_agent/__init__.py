"""The device agent: checks a bundle and benchmarks it on the machine it runs on.

Standard library + numpy + one runtime; never edgec.compiler, torch or TensorFlow. Shipped to devices as one
zipapp (``build_zipapp``) and run there as ``python3 edgec-agent-HASH.pyz {info,check,bench,serve}``; the same
code runs in-process through ``run_bench``. The result document is described in ``edgec.device_agent.schema``.
"""

from __future__ import annotations

from edgec.device_agent.schema import SCHEMA_VERSION
from edgec.device_agent.zipapp import agent_version, build_zipapp

__all__ = ["SCHEMA_VERSION", "agent_version", "build_zipapp", "run_bench"]


def run_bench(bundle_dir, options=None) -> dict:
    """Benchmark a bundle in this process; same document as ``python3 AGENT.pyz bench``."""
    from edgec.device_agent.bench import run_bench as _run_bench

    return _run_bench(bundle_dir, options)
