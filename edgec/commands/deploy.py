"""``edgec deploy BUNDLE`` and ``edgec rollback``: the bundle as the devices' live model (``edgec.api.deploy_bundle``).

Exit codes: 0 every device serves the bundle; 8 a device failed or was rolled back, or a canary stopped the
rollout (the other devices untouched); 2 bad options (for example --canary without a benchmark baseline).
"""

from __future__ import annotations

import functools
import sys

import click

from edgec import api
from edgec import cluster as on_cluster
from edgec.commands._output import echo_json, table
from edgec.commands.farm import device_options, ssh_settings

__all__ = ["deploy_cmd", "rollback_cmd"]


@click.command("deploy")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option("--device", "device_names", multiple=True, help="user@host[:port] or an inventory NAME (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Every inventory device with this tag (repeatable: all must match).")
@click.option("--canary", type=click.IntRange(min=0), default=0, show_default=True,
              help="Deploy to the first K devices, watch them for --canary-time, then to the rest.")
@click.option("--canary-time", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds the canaries' live p99 must stay within the benchmark p99 plus --margin.")
@click.option("--margin", type=click.FloatRange(min=0), default=50.0, show_default=True,
              help="Percent above the bundle's benchmark p99 (results database) a canary may reach.")
@click.option("--probe-count", type=click.IntRange(min=1), default=20, show_default=True,
              help="Reference requests sent through each canary's service per check (so there is traffic).")
@click.option("--service", type=click.Choice(["pidfile", "systemd"]), default="pidfile", show_default=True,
              help="How the service runs: a pidfile and a clean restart, or a systemd unit.")
@click.option("--port", type=click.IntRange(0, 65535), default=8750, show_default=True,
              help="Service port on the device; 0 picks a free one (the device's ~/.edgec/serve.json says which).")
@click.option("--host", "bind", default="127.0.0.1", show_default=True,
              help="Address the service binds on the device; any other than loopback needs --token-file.")
@click.option("--token-file", default=None, help="A token file ON THE DEVICE (clients send Authorization: Bearer).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Runtime threads of the service.")
@click.option("--health-timeout", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds a device has to serve the bundle and reproduce its reference outputs, else roll back.")
@click.option("--parallel", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--results", type=click.Path(dir_okay=False), default=None,
              help="Results database: baselines for --canary, and where rollouts are recorded.")
@device_options
@click.option("--json", "as_json", is_flag=True, help="Print the rollout as JSON.")
@click.option("--cluster", default=None, metavar="ADDRESS",
              help="Deploy each device from the Ray node of its site (local, auto, HOST:PORT or ray://HOST:PORT) "
                   "[default: $EDGEC_CLUSTER, else from this machine]; not with --canary.")
def deploy_cmd(bundle, device_names, tags, canary, canary_time, margin, probe_count, service, port, bind,
               token_file, threads, health_timeout, parallel, results, inventory, trust_new_host, connect_timeout,
               stall_timeout, transfer_retries, as_json, cluster):
    """Push BUNDLE, make it the live model of each device's inference service, check it serves and reproduces
    its reference outputs, and roll back any device where it does not.

    \b
    Example:
      edgec deploy model.bundle --device pi-kitchen
      edgec deploy model.bundle --tag lab --canary 1 --canary-time 300 --margin 30
    """
    show = sys.stderr.isatty() and not as_json

    def progress(device: str, stage: str) -> None:
        if show:
            click.echo(f"  {device}: {stage}", err=True)

    address = on_cluster.cluster_address(cluster)
    if address:
        run_deploy = functools.partial(on_cluster.deploy, address)
    else:
        run_deploy = functools.partial(api.deploy_bundle, canary_time=canary_time, margin_pct=margin,
                                       probe_count=probe_count, parallel=parallel)
    run = run_deploy(bundle, tuple(device_names), tags=tuple(tags), inventory=inventory, results=results,
                     canary=canary, progress=progress, port=port, host=bind, token_file=token_file,
                     threads=threads, service=service, health_timeout=health_timeout,
                     ssh=ssh_settings(trust_new_host, connect_timeout, stall_timeout, transfer_retries))
    if as_json:
        echo_json(run.to_dict())
    else:
        rows = [[d.device, ("canary " if d.canary else "") + d.status, (d.previous or "")[:16], f"{d.seconds:.1f}",
                 d.reason] for d in run.devices]
        click.echo(table(rows, ["device", "status", "previous", "seconds", "reason"]))
        if run.stopped:
            click.echo(f"stopped: {run.stopped}; not deployed to: {', '.join(run.untouched) or 'none'}")
    if not run.ok:
        sys.exit(8)


@click.command("rollback")
@click.option("--device", "device_names", multiple=True, required=True,
              help="user@host[:port] or an inventory NAME (repeatable).")
@click.option("--to", "to", default=None, help="Bundle id (or 8+ character prefix) to activate; default the previous.")
@click.option("--health-timeout", type=click.FloatRange(min=1), default=30.0, show_default=True)
@click.option("--results", type=click.Path(dir_okay=False), default=None, help="Where the rollback is recorded.")
@device_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def rollback_cmd(device_names, to, health_timeout, results, inventory, trust_new_host, connect_timeout,
                 stall_timeout, transfer_retries, as_json):
    """Make the previously active bundle (or --to ID) live again on each device, and check the service serves it."""
    outs = api.rollback(tuple(device_names), to=to, health_timeout=health_timeout, inventory=inventory,
                        results=results,
                        ssh=ssh_settings(trust_new_host, connect_timeout, stall_timeout, transfer_retries))
    if as_json:
        echo_json([{"device": o.device, "active": o.bundle_id, "previous": o.previous, "status": o.status,
                    "reason": o.reason} for o in outs])
    else:
        click.echo(table([[o.device, o.status, o.bundle_id[:16], (o.previous or "")[:16], o.reason] for o in outs],
                         ["device", "status", "active", "was", "note"]))
    if not all(o.ok for o in outs):
        sys.exit(8)

