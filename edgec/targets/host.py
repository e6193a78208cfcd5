"""Detect a profile for the running machine from its CPU flags, core count, memory and disk."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

from edgec.targets.profile import ISA_FEATURES

__all__ = ["detect_host", "read_cpu_flags"]

# /proc/cpuinfo flag -> profile feature name
_FLAG_ALIASES = {"avx512vnni": "avx512_vnni", "avx_vnni": "avx_vnni", "asimddp": "dotprod", "fphp": "fp16",
                 "asimdhp": "fp16", "amx_tile": "amx", "sse4_2": "sse4_2", "asimd": "asimd"}


def read_cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """The CPU model name and the profile features its flags show."""
    model, features = platform.processor() or platform.machine(), set()
    try:
        with open(cpuinfo) as handle:
            text = handle.read()
    except OSError:
        return model, features
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model") and value.strip():
            model = value.strip()
        elif key in ("flags", "features"):
            for flag in value.split():
                name = _FLAG_ALIASES.get(flag, flag)
                if name in ISA_FEATURES:
                    features.add(name)
    if "asimd" in features:
        features.add("neon")
    return model, features


def _ram_mb() -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 1024


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (a service account's HOME may not exist)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def detect_host() -> dict:
    """Profile data (as from TOML) for this machine, extending the closest built-in profile."""
    arch = platform.machine()
    model, features = read_cpu_flags()
    if arch in ("x86_64", "AMD64"):
        arch = "x86_64"
        base = "x86-avx512-vnni" if "avx512_vnni" in features else "x86-avx2"
    elif arch in ("aarch64", "arm64"):
        arch = "aarch64"
        base = "rpi5" if "dotprod" in features else "rpi4"
    else:
        base = "rpi4"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # Capacity, not free space: the profile (and its hash in every bundle) must not change as the disk fills.
    storage_mb = shutil.disk_usage(_existing(Path(os.path.expanduser("~")))).total // (1 << 20)
    return {
        "name": "host",
        "description": f"this machine: {model}, {cores} cores (detected; extends {base})",
        "base": base,
        "cpu": {"arch": arch, "model": model, "cores": cores, "isa_features": sorted(features)},
        "memory": {"ram_mb": _ram_mb(), "storage_mb": max(int(storage_mb), 1)},
        "runtime": {"preferred": "onnxruntime", "format": "onnx", "threads": cores},
        "power": {"sensors": ["rapl", "hwmon", "battery"]},
    }
