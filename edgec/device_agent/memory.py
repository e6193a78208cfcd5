"""Resident memory of this process: now, and the peak (Linux ``VmHWM``; ``getrusage`` elsewhere).

In a long-lived ``serve`` session the peak would carry over from earlier benchmarks, so ``reset_peak`` asks
Linux to restart it (writing ``5`` to ``/proc/self/clear_refs``); the result says whether that worked.
"""

from __future__ import annotations

import os
import sys

__all__ = ["reset_peak", "rss_bytes", "rss_peak_bytes"]


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes() -> int | None:
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else None


def rss_peak_bytes() -> int | None:
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def reset_peak() -> bool:
    """Restart the peak-RSS counter at the current RSS; False when the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return os.path.exists("/proc/self/status")
