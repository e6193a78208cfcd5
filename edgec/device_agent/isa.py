"""Does this CPU have the instructions the bundle's quantization was chosen for? (stdlib only)

The compiler writes ``report.quantization.requires`` into the manifest: the CPU architecture, features of which
the device needs at least one (``any_of``, as /proc/cpuinfo names them), what goes wrong without them
(``effect``: accuracy or speed) and why. Examples: U8S8 int8 without 7-bit weights saturates on x86 without
VNNI (onnxruntime's VPMADDUBSW path): wrong outputs, not just slow ones; int8 chosen for a core with dot-product
instructions runs slower than expected (perhaps slower than float) on a Cortex-A72, which has none.
"""

from __future__ import annotations

import platform

__all__ = ["check_isa", "cpu_flags"]

# Names a profile may use for a feature, mapped to the names /proc/cpuinfo prints.
ALIASES = {"dotprod": "asimddp", "fp16": "fphp", "neon": "asimd"}


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str] | None:
    """The CPU's feature flags (x86 ``flags``, ARM ``Features``); None when they cannot be read."""
    try:
        with open(cpuinfo) as handle:
            for line in handle:
                key, sep, value = line.partition(":")
                if sep and key.strip().lower() in ("flags", "features"):
                    return set(value.split())
    except OSError:
        return None
    return None


def check_isa(manifest: dict, flags: set[str] | None = None, arch: str | None = None) -> dict:
    """``{"ok": bool|None, "issues": [...], "checked": [...]}`` for the manifest's ``requires`` on this CPU.

    ``ok`` is None when nothing could be checked (no requirement recorded, another architecture or no flags).
    """
    quant = ((manifest.get("report") or {}).get("quantization") or {})
    requires = quant.get("requires") or []
    arch = arch or platform.machine()
    flags = cpu_flags() if flags is None else flags
    issues, checked = [], []
    for need in requires:
        if not isinstance(need, dict) or need.get("arch") not in (arch, None) or flags is None:
            continue
        wanted = [ALIASES.get(f, f) for f in need.get("any_of") or []]
        checked.append(wanted)
        if wanted and not any(f in flags for f in wanted):
            issues.append({"effect": need.get("effect"), "missing": wanted,
                           "reason": f"this CPU lacks {' / '.join(wanted)}: {need.get('reason', '')}".rstrip(": ")})
    return {"ok": None if not checked else not issues, "issues": issues}
