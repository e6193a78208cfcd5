"""``edgec results list|show|compare|delete``: the benchmark results stored by ``edgec bench`` and ``edgec farm
bench``. Device-supplied strings are printed with control characters escaped."""

from __future__ import annotations

import click

from edgec import api
from edgec.commands._output import echo_json, table

__all__ = ["results_group"]

_RESULTS = click.option("--results", type=click.Path(dir_okay=False), default=None,
                        help="Results database (default ~/.edgec/results.db).")


def _fmt(value) -> str:
    return "" if value is None else f"{value:.3f}"


@click.group("results")
def results_group():
    """List, show and compare stored benchmark results."""


@results_group.command("list")
@_RESULTS
@click.option("--device", default=None, help="Only this device.")
@click.option("--bundle", default=None, help="Only this bundle id (a prefix is enough).")
@click.option("--farm-run", default=None, help="Only the devices of this farm run.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(results, device, bundle, farm_run, limit, as_json):
    """Newest results first: one row per device outcome (result or error)."""
    rows = api.stored_runs(results, limit=limit, device=device, bundle=bundle, farm_run=farm_run)
    if as_json:
        echo_json(rows)
        return
    click.echo(table([[r["id"], r["created_at"], r["bundle_id"][:12], r["device"], r["profile"] or "", r["status"],
                       _fmt(r["latency_ms_mean"]), _fmt(r["latency_ms_p90"]),
                       f"{r['error_type']}: {r['error_message']}" if r["status"] == "error" else ""] for r in rows],
                     ["id", "when (UTC)", "bundle", "device", "profile", "status", "mean ms", "p90 ms", "error"]))


@results_group.command("show")
@_RESULTS
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the stored row and BenchResult document.")
def show_cmd(results, run_id, as_json):
    """Everything stored for one result."""
    from edgec.device_agent.text import terminal_safe

    run = api.stored_run(run_id, results)
    if as_json:
        echo_json(run)
        return
    for key in ("id", "created_at", "bundle_id", "device", "address", "profile", "status", "farm_run",
                "agent_version", "latency_ms_mean", "latency_ms_p50", "latency_ms_p90", "error_type", "error_message"):
        if run.get(key) is not None:
            click.echo(f"{key:16} {terminal_safe(run[key])}")
    from edgec.device_agent.schema import result_problem

    problem = run.get("result_problem") or (result_problem(run["result"]) if "result" in run else None)
    if problem:  # stored before results were checked, or edited since
        click.echo(f"{'result':16} not shown: {terminal_safe(problem)} (see --json; `edgec results delete {run_id}`)")
    elif run.get("result"):
        from edgec.device_agent.table import format_result

        try:
            click.echo(format_result(run["result"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a sound but incomplete document
            click.echo(f"{'result':16} incomplete ({type(exc).__name__}: {terminal_safe(exc)}); see --json")


@results_group.command("delete")
@_RESULTS
@click.argument("run_id", type=int)
def delete_cmd(results, run_id):
    """Remove one stored result (a bad or unwanted run)."""
    api.delete_run(run_id, results)
    click.echo(f"deleted run {run_id}")


@results_group.command("compare")
@_RESULTS
@click.argument("base_id", type=int)
@click.argument("other_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def compare_cmd(results, base_id, other_id, as_json):
    """Latency of OTHER_ID against BASE_ID (ratio > 1: slower)."""
    doc = api.compare_runs(base_id, other_id, results)
    if as_json:
        echo_json(doc)
        return
    from edgec.device_agent.text import terminal_safe

    base, other = doc["base"], doc["other"]
    click.echo(f"base  #{base['id']} {terminal_safe(base['device'])} bundle {base['bundle_id'][:12]} ({base['status']})")
    click.echo(f"other #{other['id']} {terminal_safe(other['device'])} bundle {other['bundle_id'][:12]} ({other['status']})"
               + ("" if doc["same_bundle"] else "  [different bundle]"))
    click.echo(table([[m["metric"], _fmt(m["base"]), _fmt(m["other"]),
                       "" if m["ratio"] is None else f"{m['ratio']:.2f}x"] for m in doc["metrics"]],
                     ["metric", "base", "other", "other/base"]))
