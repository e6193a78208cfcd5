"""``edgec push`` and ``edgec farm list|check|bench|prune``: bundles on devices over SSH.

Every device command takes ``--inventory`` (default ``./devices.toml``, then ``~/.edgec/devices.toml``) and
``--trust-new-host`` (record an unknown host key on first use; a changed key is always refused). Results of
``farm bench`` go to the SQLite store (``--results PATH``, default ``~/.edgec/results.db``) as each device
finishes. Exit codes of ``farm bench``: 0 all devices ok, 8 one or more failed, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import json
import sys

import click

from edgec import api
from edgec import cluster as on_cluster
from edgec.cluster import cluster_address
from edgec.commands._output import echo_json, human_bytes, table

__all__ = ["device_options", "farm_group", "push_cmd", "ssh_settings", "status_cmd"]

_SSH = api.SshOptions()  # the defaults the options below show


def ssh_settings(trust_new_host: bool, connect_timeout: float = _SSH.connect_timeout,
                 stall_timeout: float = _SSH.stall_timeout, transfer_retries: int = _SSH.transfer_retries) -> api.SshOptions:
    """The SshOptions of the ``device_options`` flags."""
    return api.SshOptions(trust_new_host=trust_new_host, connect_timeout=connect_timeout, stall_timeout=stall_timeout,
                      transfer_retries=transfer_retries)


def device_options(func):
    """--inventory, --trust-new-host, --connect-timeout, --stall-timeout, --transfer-retries."""
    func = click.option("--transfer-retries", type=click.IntRange(min=0), default=_SSH.transfer_retries,
                        show_default=True,
                        help="Times a push whose link broke reconnects and resumes where the device's copy ends.")(func)
    func = click.option("--stall-timeout", type=click.FloatRange(min=0.1), default=_SSH.stall_timeout,
                        show_default=True,
                        help="Seconds without transfer progress before the link counts as broken.")(func)
    func = click.option("--connect-timeout", type=click.FloatRange(min=0.1), default=_SSH.connect_timeout,
                        help="Seconds for each connection attempt (3 retries with backoff).")(func)
    func = click.option("--trust-new-host", is_flag=True,
                        help="Record an unknown host key in ~/.ssh/known_hosts (a changed key is still refused).")(func)
    return click.option("--inventory", type=click.Path(dir_okay=False), default=None,
                        help="Device inventory TOML (default ./devices.toml, then ~/.edgec/devices.toml).")(func)


def cluster_option(func):
    """--cluster ADDRESS (default $EDGEC_CLUSTER): reach the devices through the nodes of a Ray cluster."""
    return click.option("--cluster", default=None, metavar="ADDRESS",
                        help="Reach each device from the Ray node of its site: local, auto, HOST:PORT or "
                             "ray://HOST:PORT [default: $EDGEC_CLUSTER, else this machine without Ray].")(func)


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


@click.command("push")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option("--device", "device_spec", required=True, help="user@host[:port] or a device NAME from the inventory.")
@device_options
@click.option("--json", "as_json", is_flag=True, help="Print the push report as JSON.")
def push_cmd(bundle, device_spec, inventory, trust_new_host, connect_timeout, stall_timeout, transfer_retries,
             as_json):
    """Copy BUNDLE to a device's bundle store (~/.edgec/bundles/<bundle_id>); unchanged bundles send nothing."""
    show = _stderr_is_terminal() and not as_json

    def progress(sent, total):
        if show:
            click.echo(f"\r  pushing {human_bytes(sent)} / {human_bytes(total)}", err=True, nl=False)

    report = api.push(bundle, device_spec, inventory=inventory, progress=progress,
                      ssh=ssh_settings(trust_new_host, connect_timeout, stall_timeout, transfer_retries))
    if show and report.bytes_sent:
        click.echo("", err=True)
    if as_json:
        echo_json(report.to_dict())
    elif report.already_there:
        click.echo(f"{device_spec}: bundle {report.bundle_id[:16]} already on the device ({report.remote_dir}); "
                   "nothing sent")
    else:
        resumed = f", resumed {report.resumes}x after the link broke" if report.resumes else ""
        if report.continued_partial:
            resumed += ", continued an earlier push's partial upload"
        click.echo(f"{device_spec}: pushed bundle {report.bundle_id[:16]} to {report.remote_dir} "
                   f"({human_bytes(report.bytes_sent)}, {report.seconds:.2f} s{resumed}, sha256 checked on the device)")


@click.group("farm")
def farm_group():
    """Work with a farm of SSH devices listed in an inventory file."""


@farm_group.command("list")
@click.option("--inventory", type=click.Path(dir_okay=False), default=None, help="Inventory TOML.")
@click.option("--tag", "tags", multiple=True, help="Only devices with this tag (repeatable: all must match).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(inventory, tags, as_json):
    """List the devices of the inventory."""
    devices = api.devices(inventory, tuple(tags))
    if as_json:
        echo_json([{"name": d.name, "host": d.host, "port": d.port, "user": d.user, "key": d.key,
                    "target": d.target, "tags": list(d.tags), "python": d.python} for d in devices])
        return
    rows = [[d.name, d.address, d.target or "", ",".join(d.tags), d.python] for d in devices]
    click.echo(table(rows, ["name", "address", "target", "tags", "python"]))


@farm_group.command("check")
@device_options
@click.option("--tag", "tags", multiple=True, help="Only devices with this tag.")
@click.option("--parallel", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--bundle", type=click.Path(exists=True, file_okay=False), default=None,
              help="Also check that each device has the runtime this bundle needs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cluster_option
def check_cmd(inventory, trust_new_host, connect_timeout, stall_timeout, transfer_retries, tags, parallel, bundle,
              as_json, cluster):
    """Is each device reachable? Its Python, runtimes, free disk, bundles stored and agent version (installs the
    agent)."""
    common = dict(inventory=inventory, tags=tuple(tags), bundle=bundle,
                  ssh=ssh_settings(trust_new_host, connect_timeout, stall_timeout, transfer_retries))
    address = cluster_address(cluster)
    if address:
        rows = on_cluster.farm_check(address, **common)
    else:
        rows = api.farm_check(parallel=parallel, **common)
    if as_json:
        echo_json(rows)
    else:
        click.echo(table([_check_row(r) for r in rows], ["device", "address", "ok", "python", "runtimes",
                                                          "free disk", "bundles", "agent / error"]))
    if not all(r["ok"] for r in rows):
        sys.exit(8)


def _check_row(row: dict) -> list:
    if not row["ok"]:
        return [row["device"], row["address"], "no", "", "", "", "", row["error"]["message"]]
    runtimes = ", ".join(f"{k} {v}" for k, v in sorted((row.get("runtimes") or {}).items()) if v) or "none"
    free = sum((row.get("free_disk_bytes") or {}).values())
    store = row.get("store") or {}
    held = f"{store.get('bundles', 0)} ({human_bytes(store.get('bundle_bytes', 0) + store.get('partial_bytes', 0))})"
    return [row["device"], row["address"], "yes", row.get("python"), runtimes, human_bytes(free), held,
            row.get("agent_version")]


@farm_group.command("prune")
@device_options
@click.option("--tag", "tags", multiple=True, help="Only devices with this tag (repeatable: all must match).")
@click.option("--keep", type=click.IntRange(min=0), default=5, show_default=True,
              help="Bundles kept on each device: the most recently pushed or benchmarked.")
@click.option("--older-than", "older_than", type=click.FloatRange(min=0), default=None,
              help="Only remove bundles unused for at least this many days.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option("--parallel", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def prune_cmd(inventory, trust_new_host, connect_timeout, stall_timeout, transfer_retries, tags, keep, older_than,
              dry_run, parallel, as_json):
    """Free device disk: remove old bundles (all but --keep most recently used), partial uploads untouched for a
    day, and agents of other edgec versions."""
    rows = api.farm_prune(inventory=inventory, tags=tuple(tags), keep=keep, older_than_days=older_than,
                          dry_run=dry_run, parallel=parallel,
                          ssh=ssh_settings(trust_new_host, connect_timeout, stall_timeout, transfer_retries))
    if as_json:
        echo_json(rows)
    else:
        cells = [[r["device"], r["address"], len(r["removed"]), len(r["kept"]), human_bytes(r["freed_bytes"])]
                 if r["ok"] else [r["device"], r["address"], "", "", r["error"]["message"]] for r in rows]
        click.echo(table(cells, ["device", "address", "removed", "bundles kept",
                                 "would free" if dry_run else "freed"]))
    if not all(r["ok"] for r in rows):
        sys.exit(8)


@farm_group.command("bench")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@device_options
@click.option("--tag", "tags", multiple=True, help="Only devices with this tag (repeatable: all must match).")
@click.option("--device", "names", multiple=True, help="Only this inventory device (repeatable).")
@click.option("--parallel", type=click.IntRange(min=1), default=8, show_default=True, help="Devices at once.")
@click.option("--timeout", type=click.FloatRange(min=1), default=600.0, show_default=True,
              help="Seconds per device for everything (connect, push, benchmark) before it is stopped.")
@click.option("--results", type=click.Path(dir_okay=False), default=None,
              help="Results database (default ~/.edgec/results.db).")
@click.option("--runs", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--idle", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Seconds of idle power sampling before timing.")
@click.option("--power", default="auto", show_default=True, help="Power source on the devices (see edgec bench).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document with a result or error per device.")
@cluster_option
def bench_cmd(bundle, inventory, trust_new_host, connect_timeout, stall_timeout, transfer_retries, tags, names,
              parallel, timeout, results, runs, warmup, threads, idle, power, as_json, cluster):
    """Benchmark BUNDLE on every selected device in parallel, with a live display, storing each outcome."""
    selected = api.devices(inventory, tuple(tags), tuple(names))
    progress = api.farm_progress(selected, enabled=_stderr_is_terminal() and not as_json)
    common = dict(inventory=inventory, tags=tuple(tags), names=tuple(names), device_timeout=timeout,
                  results=results, progress=progress,
                  ssh=ssh_settings(trust_new_host, connect_timeout, stall_timeout, transfer_retries),
                  runs=runs, warmup=warmup, threads=threads, idle_s=idle, power=power)
    address = cluster_address(cluster)
    if address:
        run = on_cluster.farm_bench(address, bundle, **common)
    else:
        run = api.farm_bench(bundle, parallel=parallel, **common)
    if as_json:
        echo_json({**run.to_dict(), "results_db": run.results_db})
    else:
        click.echo(table([_bench_row(o) for o in run.outcomes], ["device", "status", "mean ms", "p50 ms", "p90 ms",
                                                                 "run id", "error"]))
        click.echo(f"farm run {run.farm_run}: {sum(o.ok for o in run.outcomes)} ok, "
                   f"{sum(not o.ok for o in run.outcomes)} failed; stored in {run.results_db}")
    if run.interrupted:
        click.echo("edgec: interrupted; finished devices were kept", err=True)
        sys.exit(130)
    if not all(o.ok for o in run.outcomes):
        sys.exit(8)


def _bench_row(outcome) -> list:
    if not outcome.ok:
        return [outcome.device.name, "failed", "", "", "", outcome.run_id, f"{outcome.error['type']}: "
                f"{outcome.error['message']}"]
    fig = outcome.latency
    fmt = [f"{fig[k]:.3f}" if fig[k] is not None else "" for k in ("latency_ms_mean", "latency_ms_p50", "latency_ms_p90")]
    return [outcome.device.name, "ok", *fmt, outcome.run_id, ""]


@farm_group.command("status")
@device_options
@click.option("--tag", "tags", multiple=True, help="Only devices with this tag (repeatable: all must match).")
@click.option("--device", "names", multiple=True, help="Only this inventory device (repeatable).")
@click.option("--margin", type=click.FloatRange(min=0), default=50.0, show_default=True,
              help="Percent above the benchmark p99 at which live latency counts as drift.")
@click.option("--watch", is_flag=True, help="Sample again every --interval seconds until Ctrl-C (or --count).")
@click.option("--interval", type=click.FloatRange(min=0.5), default=5.0, show_default=True)
@click.option("--count", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --watch: stop after this many rounds (0: until Ctrl-C).")
@click.option("--parallel", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--results", type=click.Path(dir_okay=False), default=None,
              help="Results database: baselines, and where samples are stored (default ~/.edgec/results.db).")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: one document; with --watch one line per sampling round (JSON Lines).")
def status_cmd(inventory, trust_new_host, connect_timeout, stall_timeout, transfer_retries, tags, names, margin,
               watch, interval, count, parallel, results, as_json):
    """The inference service on each device: active bundle, uptime, request rate, live p50/p99 against the
    benchmark, errors, temperature, throttling, power; drift when latency or errors leave the band. Each sample
    is stored in the results database. With --watch, Ctrl-C ends the watch once the round in progress is shown.
    Exit code 8 when a device of the last round could not be reached."""
    ssh = ssh_settings(trust_new_host, connect_timeout, stall_timeout, transfer_retries)
    status, rounds = None, 0
    # Ctrl-C ends the watch after the round in progress (an event, never a KeyboardInterrupt inside the sampling
    # threads' locks); a second Ctrl-C interrupts at once (exit 130).
    with api.ctrl_c() as pressed:
        for status in api.watch_farm_status(inventory=inventory, tags=tuple(tags), names=tuple(names),
                                            margin_pct=margin, parallel=parallel, results=results,
                                            interval=interval if watch else None, ssh=ssh):
            rounds += 1
            _print_status(status.to_dict(), watch, as_json)
            if rounds == count or pressed.is_set():
                break
    if status is not None and status.unreachable:
        sys.exit(8)


def _print_status(rows: list[dict], watch: bool, as_json: bool) -> None:
    """One round: a JSON document (a line of its own when watching), or the table (the screen cleared first
    when watching on a terminal; appended when piped)."""
    if as_json:
        if watch:
            click.echo(json.dumps(rows, sort_keys=True, default=str))
        else:
            echo_json(rows)
        return
    if watch and sys.stdout.isatty():
        click.echo("\x1b[2J\x1b[H", nl=False)
    click.echo(table([_status_row(r) for r in rows], ["device", "bundle", "uptime", "req/s", "p50 ms", "p99 ms",
                                                      "bench p99", "errors", "temp C", "throttled", "power W",
                                                      "drift"]))


def _status_row(row: dict) -> list:
    def num(key, fmt="{:.3g}"):
        value = row.get(key)
        return fmt.format(value) if isinstance(value, (int, float)) else ""

    if row.get("error"):
        return [row["device"], "", "", "", "", "", "", "", "", "", "", f"unreachable: {row['error']['message']}"]
    return [row["device"], (row.get("bundle_id") or "not serving")[:16], num("uptime_s", "{:.0f}s"), num("rate_rps"),
            num("p50_ms"), num("p99_ms"), num("baseline_p99_ms"), row.get("errors", ""), num("temperature_c", "{:.1f}"),
            ",".join(row.get("throttled") or []), num("power_w") or row.get("power_source", ""),
            ",".join(row.get("drift") or []) or "ok"]
