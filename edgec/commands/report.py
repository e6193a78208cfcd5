"""``edgec report``: one self-contained HTML page from the results database."""

from __future__ import annotations

import sys
from dataclasses import asdict

import click

from edgec import api
from edgec.commands._output import echo_json

__all__ = ["report_cmd"]


@click.command("report")
@click.option("--results", type=click.Path(dir_okay=False), default=None,
              help="Results database (default ~/.edgec/results.db).")
@click.option("--bundle", "bundles", multiple=True,
              help="Only this bundle: a bundle directory (its manifest adds sizes and precision) or an id prefix "
                   "(repeatable).")
@click.option("--device", "devices", multiple=True, help="Only this device name (repeatable).")
@click.option("--title", default="edgec benchmark report", show_default=True, help="Page title.")
@click.option("--min-change", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Smallest slow-down (percent of the median) flagged as a regression when it is also beyond "
                   "the runs' noise.")
@click.option("--fail-on-regression", is_flag=True, help="Exit with code 10 when a regression is flagged (for CI).")
@click.option("--json", "as_json", is_flag=True, help="Print the comparisons with the previous runs as JSON.")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), required=True, help="HTML file to write.")
def report_cmd(results, bundles, devices, title, min_change, fail_on_regression, as_json, out):
    """Write an HTML report of stored benchmark results: summary per device and bundle, latency distributions,
    accuracy/latency/size of variants with the Pareto front, power and energy, regressions against the
    previous run, and the conditions of each run. Opens without network; no JavaScript.

    \b
    Example:
      edgec report --results ~/.edgec/results.db -o report.html
      edgec report --device pi4-lab --fail-on-regression -o report.html   # exit code 10 on a regression
    """
    report = api.results_report(out, results=results, bundles=bundles, devices=devices, title=title,
                                min_change=min_change / 100)
    path, data, changes = report.path, report.data, report.changes
    if as_json:
        echo_json({"report": str(path), "runs": len(data.runs), "bundles": sorted(data.bundles),
                   "devices": data.devices(),
                   "comparisons": [{"bundle_id": b, "device": d, **asdict(c), "flagged": c.flagged}
                                   for (b, d), c in changes.items()]})
    else:
        click.echo(f"report   {path}  ({len(data.runs)} runs, {len(data.bundles)} bundles, "
                   f"{len(data.devices())} devices)")
        for (bundle_id, device), change in changes.items():
            if change.flagged:
                click.echo(f"REGRESSION {data.bundles[bundle_id].label} on {device}: median "
                           f"{change.base_median_ms:.4g} -> {change.new_median_ms:.4g} ms ({change.change:+.1%}, "
                           f"95% interval {change.ci_low:+.1%} to {change.ci_high:+.1%})")
    if fail_on_regression and report.regressions:
        sys.exit(10)
