"""The results report: summary, latency distributions, variants and their Pareto front, power and energy,
comparison with the previous run, and the conditions of every run."""

from __future__ import annotations

from edgec.report import plots
from edgec.report.data import BundleInfo, ReportData, Run, accuracy_of
from edgec.report.html import esc, figure, fmt, ms, page, table
from edgec.report.pareto import pareto_front
from edgec.report.regression import MIN_HISTORY, LatencyChange, compare_latency, history_threshold

__all__ = ["latency_changes", "render_results_report"]


def _kib(n) -> str:
    return "-" if n is None else f"{n / 1024:.1f} KiB"


def _bundle_cell(info: BundleInfo) -> str:
    return f"<b>{esc(info.label)}</b><br><code>{esc(info.short)}</code>"


def _when(run: Run) -> str:
    return f"#{run.id}<br>{esc(run.created_at.replace('T', ' ').replace('+00:00', ''))}"


def _energy_cell(power: dict | None) -> str:
    power = power or {}
    joules = power.get("energy_per_inference_j")
    if joules is None:
        return "-"
    if power.get("status") == "estimated" or not power.get("measured"):
        return f'<span class="estimated">&asymp; {joules * 1000:.3f} mJ</span> <span class="badge estimated">estimated</span>'
    return f"{joules * 1000:.3f} mJ"


def _summary(data: ReportData, changes: dict) -> str:
    """Per device: the figures people compare (fits a 1280-pixel window), then the rest in a details table."""
    flagged = [key for key, change in changes.items() if change.flagged]
    parts = []
    if flagged:
        names = ", ".join(f"{esc(data.bundles[b].label)} on {esc(d)}" for b, d in flagged)
        parts.append(f'<p><span class="badge regression">{len(flagged)} regression(s)</span> {names} '
                     '(see <a href="#compare">the comparison</a>)</p>')
    headers = ["bundle", "model", "format / precision", "size", "accuracy", "p50 ms", "p99 ms", "inferences/s",
               "energy / inference"]
    detail_headers = ["bundle", "runs", "latest run", "p90 ms", "mean ms", "stdev ms", "peak RSS"]
    for device in data.devices():
        rows, classes, details = [], [], []
        for bundle_id, info in data.bundles.items():
            runs = [r for r in data.runs if r.bundle_id == bundle_id and r.device == device]
            if not runs:
                continue
            latest = data.latest(bundle_id, device)
            accuracy, _ = accuracy_of(info)
            base = [_bundle_cell(info), esc(info.name), esc(f"{info.format} / {info.precision}"),
                    _kib(info.model_bytes), fmt(accuracy, ".1f")]
            if latest is None:
                rows.append([*base, f'<span class="badge error">error</span> {esc(runs[-1].error)}', "", "", ""])
                classes.append("error")
                details.append([_bundle_cell(info), str(len(runs)), _when(runs[-1])] + [""] * 4)
                continue
            doc, lat = latest.result, latest.result["latency_ms"]
            peak = (doc.get("memory") or {}).get("rss_peak_bytes")
            rows.append([*base, ms(lat["p50"]), ms(lat["p99"]), fmt(doc.get("throughput_ips"), ".1f"),
                         _energy_cell(doc.get("power"))])
            classes.append("bad" if (bundle_id, device) in flagged else "")
            details.append([_bundle_cell(info), str(len(runs)), _when(latest), ms(lat["p90"]), ms(lat["mean"]),
                            ms(lat["stdev"]), "-" if peak is None else f"{peak / 2**20:.1f} MiB"])
        parts.append(f"<h3>Device {esc(device)}</h3>"
                     + table(headers, rows, classes, numeric={3, 4, 5, 6, 7}, css="small")
                     + "<details><summary>more timing: runs, latest run, p90, mean, stdev, peak memory</summary>"
                     + table(detail_headers, details, numeric={1, 3, 4, 5, 6}, css="small") + "</details>")
    return "".join(parts)


def _sweep(data: ReportData) -> str:
    rows, classes = [], []
    metric = next((v["metrics"]["accuracy_metric"] for v in data.sweep or []
                   if (v.get("metrics") or {}).get("accuracy_metric")), "accuracy")
    for v in data.sweep or []:
        info = data.bundles.get(v.get("bundle_id") or "")
        metrics = v.get("metrics") or {}
        acc = fmt(metrics.get("accuracy"), ".2f") if "accuracy_error" not in metrics else \
            f'<span class="badge error">not measured</span> {esc(metrics["accuracy_error"])}'
        status = '<span class="badge ok">ok</span>' if v["status"] == "ok" else \
            f'<span class="badge error">{esc(v["status"])}</span> {esc(v.get("error"))}'
        rows.append([f"<b>{esc(v['label'])}</b>", esc(v.get("device") or ""), status,
                     f"<code>{esc((v.get('bundle_id') or '')[:12])}</code>",
                     esc(f"{info.format} / {info.precision}") if info else "-",
                     _kib(info.model_bytes) if info else "-", acc])
        classes.append("" if v["status"] == "ok" else "error")
    return ("<p>Every variant the sweep asked for; a variant that could not be compiled or benchmarked shows its "
            "error and the others carry on.</p>"
            + table(["variant", "device", "status", "bundle", "format / precision", "size", metric], rows,
                    classes, numeric={5, 6}))


_MAX_CURVES = 10  # more lines than this on one plot cannot be told apart


def _distributions(data: ReportData) -> str:
    parts = []
    for device in data.devices():
        latest = sorted(((run, info) for info in data.bundles.values()
                         if (run := data.latest(info.bundle_id, device)) is not None), key=lambda p: -p[0].id)
        series = [(info.label, run.result["latency_samples_ms"]) for run, info in latest
                  if run.result.get("latency_samples_ms")][:_MAX_CURVES]
        notes = [info.label for run, info in latest if not run.result.get("latency_samples_ms")]
        shown = len(series)
        more = len(latest) - len(notes) - shown
        if series:
            caption = (f"Empirical CDF of every timed inference of the latest run of each bundle on {device}"
                       + (f" (the {shown} most recently run; {more} more in the tables)" if more else "")
                       + "; the dotted line is the median.")
            parts.append(figure(plots.latency_cdf(series[::-1], f"Latency on {device}"), f"latency CDF on {device}",
                                caption))
        if notes:
            parts.append(f"<p class='meta'>No per-inference latencies stored for: {esc(', '.join(notes))} "
                         "(run by an older agent).</p>")
    return "".join(parts) or "<p>No successful runs.</p>"


def render_results_report(data: ReportData) -> str:
    """The whole results page as one self-contained HTML string."""
    from edgec.report.results_sections import conditions, live, method, power

    changes = latency_changes(data)
    sections = [("summary", "Summary per device and bundle", _summary(data, changes))]
    if data.sweep is not None:
        sections.append(("sweep", "Sweep variants", _sweep(data)))
    sections += [("latency", "Latency distributions", _distributions(data)),
                 ("variants", "Accuracy, latency and size of the variants of each model", _variants(data)),
                 ("power", "Power and energy per inference", power(data)),
                 ("compare", "Compared with the previous run", _comparison(data, changes)),
                 ("conditions", "Conditions of each run", conditions(data)),
                 ("live", "Live: the inference services over time, rollouts and rollbacks", live(data)),
                 ("method", "How to read this report", method(data.min_change))]
    subtitle = (f"{len(data.runs)} run(s) of {len(data.bundles)} bundle(s) on {len(data.devices())} device(s), "
                f"from <code>{esc(data.results_path)}</code>")
    return page(data.title, subtitle, sections)


def latency_changes(data: ReportData) -> dict[tuple[str, str], LatencyChange]:
    """(bundle, device) -> the latest run against the one before it."""
    out = {}
    for bundle_id in data.bundles:
        for device in data.devices():
            ok = [r for r in data.runs if r.bundle_id == bundle_id and r.device == device and r.ok]
            if len(ok) >= 2:
                history = [r.result["latency_ms"]["p50"] for r in ok[:-1]]
                out[(bundle_id, device)] = compare_latency(ok[-2].result, ok[-1].result,
                                                           min_change=history_threshold(history, data.min_change))
    return out


def _comparison(data: ReportData, changes: dict) -> str:
    if not changes:
        return "<p>No bundle has two successful runs on the same device yet.</p>"
    rows, classes = [], []
    for (bundle_id, device), c in changes.items():
        ok = [r for r in data.runs if r.bundle_id == bundle_id and r.device == device and r.ok]
        badge = {"regression": "regression", "improvement": "improvement"}.get(c.verdict, "noise")
        rows.append([_bundle_cell(data.bundles[bundle_id]), esc(device), f"#{ok[-2].id} &rarr; #{ok[-1].id}",
                     ms(c.base_median_ms), ms(c.new_median_ms), f"{c.change * 100:+.1f}%",
                     f"[{c.ci_low * 100:+.1f}%, {c.ci_high * 100:+.1f}%]", f"{c.threshold * 100:.1f}%",
                     f'<span class="badge {badge}">{esc(c.verdict)}</span>', esc(c.method)])
        classes.append({"regression": "bad", "improvement": "good"}.get(c.verdict, ""))
    return (f"<p>The latest run of each bundle on each device against the run before it. Flagged as a regression "
            f"when the 95% bootstrap interval of the change in median latency is above zero and the median grew "
            f"by at least the threshold: {data.min_change * 100:.0f}%, or twice the run-to-run spread of the earlier "
            f"medians when there are {MIN_HISTORY} or more (see <a href='#method'>How to read this report</a>).</p>"
            + table(["bundle", "device", "runs", "previous p50 ms", "latest p50 ms", "change", "95% interval",
                     "threshold", "verdict", "method"], rows, classes, numeric={3, 4, 5, 6, 7}))


def _float_score(infos: list[BundleInfo]) -> tuple[float | None, str]:
    """The float model's score that a quantized sibling's compile report measured on its evaluation data."""
    for info in infos:
        section = ((info.manifest or {}).get("report") or {}).get("accuracy")
        if isinstance(section, dict) and isinstance(section.get("float_score"), (int, float)):
            return float(section["float_score"]), str(section.get("metric") or "accuracy (compile report)")
    return None, ""


def _variant_points(data: ReportData, infos: list[BundleInfo], device: str) -> list[dict]:
    points = []
    float_score = _float_score(infos) if not any(i.metrics.get("accuracy") is not None for i in infos) else (None, "")
    for info in infos:
        run: Run | None = data.latest(info.bundle_id, device)
        if run is None or info.model_bytes is None:
            continue
        accuracy, metric = accuracy_of(info)
        if accuracy is None and info.precision == "fp32" and float_score[0] is not None:
            accuracy, metric = float_score  # a float bundle is the float model (verified to tolerance)
        points.append({"label": info.label, "info": info, "latency_ms": run.result["latency_ms"]["p50"],
                       "size_bytes": info.model_bytes, "accuracy": accuracy, "metric": metric})
    return points


def _variants(data: ReportData) -> str:
    groups: dict[str, list[BundleInfo]] = {}
    for info in data.bundles.values():
        groups.setdefault(info.source, []).append(info)
    parts = []
    for infos in groups.values():
        for device in data.devices():
            points = _variant_points(data, infos, device)
            if len(points) >= 2:
                parts.append(_variant_group(points, infos[0].name, device))
    return "".join(parts) or ("<p>No model has two or more variants benchmarked on one device with a known size "
                              "(compare variants with <code>edgec sweep</code>).</p>")


def _variant_group(points: list[dict], name: str, device: str) -> str:
    with_accuracy = all(p["accuracy"] is not None for p in points)
    if with_accuracy:
        front = set(pareto_front([(p["accuracy"], p["latency_ms"], p["size_bytes"]) for p in points],
                                 [True, False, False]))
        metric = points[0]["metric"]
        uri = plots.pareto_scatter(points, front, metric, f"{name} on {device}")
    else:
        front = set(pareto_front([(p["latency_ms"], p["size_bytes"]) for p in points], [False, False]))
        metric = ""
        uri = plots.pareto_scatter(points, front, None, f"{name} on {device} (no accuracy measured)")
    rows = [[f"<b>{esc(p['label'])}</b>", esc(p["info"].format), esc(p["info"].precision), ms(p["latency_ms"]),
             _kib(p["size_bytes"]), fmt(p["accuracy"], ".2f"), "yes" if k in front else "no"]
            for k, p in enumerate(points)]
    objectives = "accuracy (higher), median latency and size (lower)" if with_accuracy else \
        "median latency and size (lower); no accuracy was measured"
    return (f"<h3>{esc(name)} on {esc(device)}</h3>"
            + figure(uri, f"accuracy, latency and size of {name} variants on {device}",
                     f"Filled points are on the Pareto front over {objectives}: no other variant is at least as "
                     "good on all of them and better on one. The dashed line joins the front in each view.")
            + table(["variant", "format", "precision", "p50 ms", "size", metric or "accuracy", "Pareto front"],
                    rows, ["good" if k in front else "" for k in range(len(points))], numeric={3, 4, 5}))
