"""A BenchResult document as a short human-readable report (``edgec bench`` without ``--json``)."""

from __future__ import annotations

__all__ = ["format_result"]


def _num(value, spec: str = ".3f", unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:{spec}}{unit}"


def _mib(value) -> str:
    return "-" if value is None else f"{value / 2**20:.1f} MiB"


def _power_lines(power: dict) -> list[tuple[str, str]]:
    source, status = power.get("source"), power.get("status")
    label = source if power.get("measured") else f"{source} (not measured)"
    rows = [("power source", label)]
    if status in ("none", "lost"):
        rows.append(("power", f"{status}: {power.get('reason')}"))
        return rows
    if status == "estimated":
        rows.append(("power", "ESTIMATED from the profile's power model, not measured"))
    rows += [("idle power", _num(power.get("idle_watts"), ".2f", " W")),
             ("active power", _num(power.get("active_watts"), ".2f", " W")),
             ("energy / inference", _num(_mj(power.get("energy_per_inference_j")), ".4g", " mJ"))]
    if power.get("sampling_hz") is not None:
        rows.append(("sampling", f"{power['sampling_hz']:.1f} Hz, {power.get('samples')} samples"))
    for key in ("reason", "note"):
        if power.get(key):
            rows.append(("power note", power[key]))
    return rows


def _mj(joules):
    return None if joules is None else joules * 1000.0


def _conditions_lines(cond: dict) -> list[tuple[str, str]]:
    cpu, before, after = cond.get("cpu") or {}, cond.get("before") or {}, cond.get("after") or {}
    rows = [("cpu", f"{cpu.get('model')} ({cpu.get('arch')}), {cpu.get('cores_usable')}/{cpu.get('cores')} cores"),
            ("os / python", f"{(cond.get('os') or {}).get('distribution') or (cond.get('os') or {}).get('system')}"
                            f" / Python {(cond.get('python') or {}).get('version')}")]
    if before.get("governor") or before.get("freq_mhz"):
        freqs = before.get("freq_mhz") or []
        rows.append(("governor / freq", f"{before.get('governor')} / "
                     + (f"{min(freqs):.0f}-{max(freqs):.0f} MHz" if freqs else "-")))
    zones = sorted(set(before.get("temperatures_c") or {}) | set(after.get("temperatures_c") or {}))
    for zone in zones:
        t0, t1 = (before.get("temperatures_c") or {}).get(zone), (after.get("temperatures_c") or {}).get(zone)
        rows.append((f"temp {zone}", f"{_num(t0, '.1f')} -> {_num(t1, '.1f')} C"))
    for when, snap in (("before", before), ("after", after)):
        throttled = snap.get("throttled")
        if throttled:
            flags = throttled.get("flags")
            rows.append((f"throttled {when}", ", ".join(flags) if flags else throttled.get("raw", "error")))
    return rows


def format_result(doc: dict) -> str:
    """Aligned ``label  value`` lines: what ran, latency, throughput, memory, power, conditions."""
    lat, timing, mem, rt = doc["latency_ms"], doc["timing"], doc["memory"], doc["runtime"]
    threads = rt.get("threads") or "default"
    rows = [("bundle", f"{doc['bundle'].get('name') or doc['bundle']['path']} ({doc['bundle_id'][:12]}, "
                       f"{doc['bundle']['format']})"),
            ("runtime", f"{rt['name']} {rt['version']}, threads {threads}"
                        + (", XNNPACK" if rt.get("xnnpack") else "")),
            ("load / first run", f"{timing['load_s'] * 1000:.1f} ms / {timing['first_inference_s'] * 1000:.2f} ms"),
            ("latency (ms)", f"p50 {lat['p50']:.4g}  p90 {lat['p90']:.4g}  p99 {lat['p99']:.4g}"),
            ("", f"min {lat['min']:.4g}  max {lat['max']:.4g}  mean {lat['mean']:.4g}  stdev {lat['stdev']:.4g}"
                 f"  (n={lat['count']})"),
            ("throughput", _num(doc.get("throughput_ips"), ".1f", " inferences/s")),
            ("memory", f"peak {_mib(mem.get('rss_peak_bytes'))}, +{_mib(mem.get('rss_increase_bytes'))} over idle "
                       f"{_mib(mem.get('rss_idle_bytes'))}"),
            *_power_lines(doc["power"]), *_conditions_lines(doc["conditions"])]
    for issue in ((doc.get("check") or {}).get("isa") or {}).get("issues") or []:
        rows.append((f"WARNING ({issue.get('effect')})", issue.get("reason", "")))
    from edgec.device_agent.text import terminal_safe

    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {terminal_safe(value)}".rstrip() for label, value in rows)
