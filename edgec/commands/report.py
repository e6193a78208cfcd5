"""``edgec report``: one self-contained HTML page from the results database."""

from __future__ import annotations

import click

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
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), required=True, help="HTML file to write.")
def report_cmd(results, bundles, devices, title, min_change, out):
    """Write an HTML report of stored benchmark results: summary per device and bundle, latency distributions,
    accuracy/latency/size of variants with the Pareto front, power and energy, regressions against the
    previous run, and the conditions of each run. Opens without network; no JavaScript."""
    from edgec.deploy.results import ResultsStore
    from edgec.report import collect, render_results_report, write_report

    with ResultsStore(results) as store:
        data = collect(store, bundles, devices)
    data.title, data.min_change = title, min_change / 100
    path = write_report(out, render_results_report(data))
    click.echo(f"report   {path}  ({len(data.runs)} runs, {len(data.bundles)} bundles, "
               f"{len(data.devices())} devices)")
