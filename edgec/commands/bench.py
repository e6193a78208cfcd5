"""``edgec bench BUNDLE``: benchmark a bundle with the device agent and print the result.

A skin on ``edgec.api.bench``: ``--device local`` runs the agent zipapp as a subprocess of this Python (the
same file and code path as on a device, only without SSH), any other device goes over SSH. ``print_result``
prints the BenchResult document (a table, or the JSON document with ``--json``).
"""

from __future__ import annotations

from pathlib import Path

import click

from edgec import api
from edgec.commands._output import echo_json
from edgec.commands.farm import device_options, ssh_settings
from edgec.device_agent.power import parse_model
from edgec.device_agent.table import format_result
from edgec.settings import LOCAL_DEVICE

__all__ = ["bench_cmd", "print_result"]


def print_result(doc: dict, as_json: bool) -> None:
    if as_json:
        echo_json(doc)
    else:
        click.echo(format_result(doc))


@click.command("bench")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--device", default=LOCAL_DEVICE, show_default=True, help="Where to run it; 'local' is this machine.")
@click.option("--runs", type=int, default=200, show_default=True, help="Timed inferences.")
@click.option("--warmup", type=int, default=20, show_default=True, help="Untimed inferences first.")
@click.option("--threads", type=int, default=None, help="Runtime threads (default: the runtime's choice).")
@click.option("--duration", type=float, default=None, help="Time inferences for S seconds instead of --runs.")
@click.option("--power", default="auto", show_default=True,
              help="Power source: auto, none, hwmon, jetson, pmic, rapl, battery, command, estimated, or a comma list.")
@click.option("--power-command", default=None, help="External meter command printing watts (with --power command).")
@click.option("--power-model", default=None, help="IDLE_W,ACTIVE_W for --power estimated (default: the profile's).")
@click.option("--idle", type=float, default=1.0, show_default=True, help="Seconds of idle power sampling first.")
@click.option("--power-interval", type=float, default=0.02, show_default=True,
              help="Seconds between power samples (meter commands and vcgencmd are read at most every 0.1-0.2 s).")
@click.option("--sysfs-root", default="/sys", show_default=True, help="Where the sensors are (tests: a fake tree).")
@device_options
@click.option("--results", type=click.Path(dir_okay=False), default=None,
              help="Results database; remote runs are stored by default in ~/.edgec/results.db, local runs only "
                   "when this is given.")
@click.option("--json", "as_json", is_flag=True, help="Print the BenchResult JSON document.")
def bench_cmd(bundle, device, runs, warmup, threads, duration, power, power_command, power_model, idle,
              power_interval, sysfs_root, inventory, trust_new_host, connect_timeout, stall_timeout, transfer_retries,
              results, as_json):
    """Benchmark BUNDLE with the device agent: latency, throughput, memory, power and energy, and the
    conditions it ran under."""
    run = api.bench(bundle, device, inventory=inventory, results=results, quiet=as_json,
                    ssh=ssh_settings(trust_new_host, connect_timeout, stall_timeout, transfer_retries),
                    runs=runs, warmup=warmup, threads=threads, duration_s=duration, power=power,
                    power_command=power_command, power_model=parse_model(power_model) if power_model else None,
                    idle_s=idle, sysfs_root=sysfs_root, power_interval_s=power_interval)
    print_result(run.result, as_json)
