"""Sections of the results report that are tables of the stored documents: power, conditions, method."""

from __future__ import annotations

from edgec.report import plots
from edgec.report.data import ReportData
from edgec.report.html import esc, figure, fmt, table
from edgec.report.regression import CONFIDENCE, RESAMPLES

__all__ = ["conditions", "live", "method", "power"]


def live(data: ReportData) -> str:
    """Per device: the service's live latency over time with rollouts marked, then every rollout in a table."""
    if not data.live and not data.rollouts:
        return ("<p>No live samples: deploy a bundle with <code>edgec deploy</code> and sample the services with "
                "<code>edgec farm status</code>.</p>")
    parts = []
    for device in sorted({r["device"] for r in data.live} | {r["device"] for r in data.rollouts}):
        samples = [s for s in data.live if s["device"] == device]
        events = [(r["at"], f"{r['action']} {str(r['bundle_id'] or 'none')[:8]}",
                   r["status"] == "ok") for r in data.rollouts if r["device"] == device]
        baseline = next((s["baseline_p99_ms"] for s in reversed(samples) if s.get("baseline_p99_ms")), None)
        if samples:
            parts.append(figure(plots.live_latency([s["at"] for s in samples], [s["p50_ms"] for s in samples],
                                                   [s["p99_ms"] for s in samples], baseline, events,
                                                   f"Live latency on {device}"),
                                f"live latency on {device}", "Inference time in the service (runtime call) over "
                                "its window; green lines: a bundle went live, red: rolled back or refused."))
    rows = [[esc(r["created_at"]), esc(r["device"]), esc(r["action"]), f"<code>{esc(str(r['bundle_id'])[:16])}</code>",
             f"<code>{esc(str(r['previous_bundle_id'] or '')[:16])}</code>", esc(r["status"]), esc(r["reason"] or "")]
            for r in data.rollouts]
    drift = [s for s in data.live if s.get("drift")]
    note = (f"<p>{len(drift)} of {len(data.live)} samples out of band (drift: latency, errors, down or "
            "unreachable).</p>") if data.live else ""
    return note + "".join(parts) + (table(["when", "device", "action", "bundle", "previous", "status", "reason"], rows)
                                    if rows else "")


def power(data: ReportData) -> str:
    rows, classes, bars = [], [], []
    for run in data.runs:
        if not run.ok or run is not data.latest(run.bundle_id, run.device):
            continue
        info, p = data.bundles[run.bundle_id], run.result.get("power") or {}
        estimated = p.get("status") == "estimated" or (p.get("source") not in (None, "none") and not p.get("measured"))
        mark = (lambda text: f'<span class="estimated">&asymp; {text}</span>') if estimated else (lambda text: text)
        joules = p.get("energy_per_inference_j")
        status = '<span class="badge estimated">estimated</span>' if estimated else esc(p.get("status"))
        rows.append([esc(run.device), f"<b>{esc(info.label)}</b> <code>{esc(info.short)}</code>",
                     esc(p.get("source")), status, mark(fmt(p.get("idle_watts"), ".2f", " W")),
                     mark(fmt(p.get("active_watts"), ".2f", " W")),
                     mark(fmt(None if joules is None else joules * 1000, ".3f", " mJ")), esc(p.get("reason") or "")])
        classes.append("")
        if joules is not None:
            bars.append((f"{info.label} on {run.device}", joules * 1000, estimated))
    if not rows:
        return "<p>No successful runs.</p>"
    chart = figure(plots.energy_bars(bars, "Energy per inference"), "energy per inference",
                   "Hatched orange bars are estimates from the target profile's power model, not measurements.") \
        if bars else ""
    return ("<p>Latest run of each bundle on each device. Values marked <span class='badge estimated'>estimated</span> "
            "(and shown as <span class='estimated'>&asymp; italic</span>) come from the target profile's idle/active "
            "power model, not from a sensor.</p>" + chart
            + table(["device", "bundle", "source", "status", "idle power", "active power", "energy / inference",
                     "note"], rows, classes, numeric={4, 5, 6}))


def _temps(before: dict, after: dict) -> str:
    t0, t1 = before.get("temperatures_c") or {}, after.get("temperatures_c") or {}
    return "<br>".join(f"{esc(z)}: {fmt(t0.get(z), '.1f')} &rarr; {fmt(t1.get(z), '.1f')} &deg;C"
                       for z in sorted(set(t0) | set(t1))) or "-"


def _throttled(before: dict, after: dict) -> str:
    out = []
    for when, snap in (("before", before), ("after", after)):
        throttled = snap.get("throttled")
        if throttled:
            out.append(f"{when}: {esc(', '.join(throttled.get('flags') or []) or throttled.get('raw'))}")
    return "<br>".join(out) or "not reported"


def _condition_row(run) -> list[str]:
    doc = run.result
    cond, runtime, settings = doc.get("conditions") or {}, doc.get("runtime") or {}, doc.get("settings") or {}
    cpu, before, after = cond.get("cpu") or {}, cond.get("before") or {}, cond.get("after") or {}
    freqs = before.get("freq_mhz") or []
    load = before.get("loadavg")
    return [f"#{run.id}", esc((doc.get("started_at") or run.created_at).replace("+00:00", "")), esc(run.device),
            f"<code>{esc(run.bundle_id[:12])}</code>",
            esc(f"{runtime.get('name')} {runtime.get('version')}, threads {runtime.get('threads') or 'default'}"),
            esc(f"{cpu.get('model')} ({cpu.get('arch')}), {cpu.get('cores_usable')}/{cpu.get('cores')} cores"),
            esc(before.get("governor") or "-") + ("<br>" + f"{min(freqs):.0f}-{max(freqs):.0f} MHz" if freqs else ""),
            _temps(before, after), _throttled(before, after),
            esc(" ".join(f"{x:.2f}" for x in load) if isinstance(load, list) else load or "-"),
            esc(f"{settings.get('runs')} runs, {settings.get('warmup')} warm-up"),
            esc(f"Python {(cond.get('python') or {}).get('version')}, agent {doc.get('agent_version')}")]


def conditions(data: ReportData) -> str:
    rows, classes = [], []
    for run in data.runs:
        if run.ok:
            rows.append(_condition_row(run))
            classes.append("")
        else:
            rows.append([f"#{run.id}", esc(run.created_at), esc(run.device), f"<code>{esc(run.bundle_id[:12])}</code>",
                         f'<span class="badge error">error</span> {esc(run.error)}'] + [""] * 7)
            classes.append("error")
    return table(["run", "started (UTC)", "device", "bundle", "runtime", "cpu", "governor / freq",
                  "temperatures before -> after", "throttling", "load average", "settings", "software"],
                 rows, classes, css="small")


def method(min_change: float) -> str:
    return (
        "<ul>"
        "<li><b>Latency</b> is the wall time of one inference measured by the agent on the device, after warm-up, "
        "with the garbage collector off. p50/p90/p99 are percentiles of the timed inferences.</li>"
        f"<li><b>Regressions.</b> The latest run of a bundle on a device is compared with the run before it: the "
        f"change is the difference of the median latencies relative to the earlier median. The noise is a "
        f"{CONFIDENCE * 100:.0f}% percentile-bootstrap interval of that difference, resampling each run's own "
        f"per-inference latencies {RESAMPLES} times (fixed seed: the same database gives the same report). A run "
        f"is flagged as a regression when the whole interval is above zero <i>and</i> the median grew by at least "
        f"{min_change * 100:.0f}%: runs also differ by things the within-run spread does not capture "
        "(temperature, background load), so a statistically clear but tiny shift is reported as "
        "<i>below threshold</i> rather than flagged. With three or more earlier runs of the bundle on the device, "
        "the threshold grows to twice the standard deviation of the relative change between consecutive earlier "
        "medians, so a device whose runs drift must move further. Runs stored without per-inference latencies "
        "use a normal "
        "approximation from their percentiles (sigma = (p90 - p50) / 1.2816, standard error of a median = "
        "1.2533 sigma / sqrt(n)).</li>"
        "<li><b>Pareto front.</b> Among the variants of one source model on one device, a variant is on the front "
        "when no other variant has at least its accuracy, at most its median latency and at most its size, and is "
        "strictly better on one of the three.</li>"
        "<li><b>Accuracy</b> is what <code>edgec sweep</code> measured on the host with the bundle's own runtime "
        "(top-1 accuracy on labelled <code>--eval-data</code>, otherwise top-1 agreement with the fp32 variant), "
        "or else what the compile report states.</li>"
        "<li><b>Energy per inference</b> = (energy over the timed window - idle power x window) / inferences. "
        "Estimated values come from the target profile's power model and are marked.</li>"
        "</ul>")
