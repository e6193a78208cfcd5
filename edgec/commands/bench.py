"""``edgec bench BUNDLE``: benchmark a bundle with the device agent and print the result.

``--device local`` runs the agent zipapp as a subprocess of this Python: the same file and code path as on a
device, only without SSH. ``run_local`` returns the BenchResult document; ``print_result`` prints it (a table,
or the JSON document with ``--json``). Remote devices plug in beside ``run_local`` with the same options and
the same document (``edgec.device_agent.client`` builds the agent's argv and parses its answer).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from edgec.commands._output import echo_json
from edgec.commands.farm import device_options
from edgec.device_agent.client import bench_argv, parse_output
from edgec.device_agent.options import BenchOptions
from edgec.errors import InputError, UsageError

__all__ = ["agent_cache_dir", "bench_cmd", "print_result", "profile_power_model", "run_local"]

LOCAL = "local"


def agent_cache_dir() -> Path:
    """Where the host keeps built agent zipapps (``$EDGEC_HOME/agent``, default ``~/.edgec/agent``)."""
    return Path(os.environ.get("EDGEC_HOME", Path.home() / ".edgec")) / "agent"


def profile_power_model(profile_name: str) -> tuple | None:
    """(idle_watts, active_watts) of a target profile's power model, or None when it has none."""
    from edgec.targets import load_profile

    power = load_profile(profile_name).power
    return (power.idle_watts, power.active_watts) if power.active_watts > 0 else None


def run_local(bundle: str | os.PathLike, options: BenchOptions, python: str = sys.executable,
              quiet: bool = False) -> dict:
    """Benchmark ``bundle`` on this machine with the agent zipapp run by ``python``; the BenchResult document.

    The agent's progress goes to this process's stderr unless ``quiet``.
    """
    from edgec.device_agent import build_zipapp

    path = Path(bundle)
    if not path.exists():
        raise InputError(f"{path}: no such bundle directory (make one with `edgec compile`)")
    agent = build_zipapp(agent_cache_dir())
    argv = bench_argv(str(agent), str(path.resolve()), options, python=python)
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE if quiet else None,
                          text=True, check=False)
    return parse_output(done.stdout, done.returncode, done.stderr or "", where=f"{LOCAL} agent")


def print_result(doc: dict, as_json: bool) -> None:
    if as_json:
        echo_json(doc)
        return
    from edgec.device_agent.table import format_result

    click.echo(format_result(doc))


def _device_profile(device: str, inventory) -> str:
    """The profile whose power model estimates this device: ``host`` locally, else the inventory's target."""
    if device == LOCAL:
        return "host"
    from edgec.deploy.inventory import resolve_device

    target = resolve_device(device, inventory).target
    if not target:
        raise UsageError(f"--power estimated: device {device!r} has no target profile in the inventory; give "
                         "--power-model IDLE_W,ACTIVE_W")
    return target


def _options(runs, warmup, threads, duration, power, power_command, power_model, idle, sysfs_root,
             power_interval=0.02, profile: str = "host") -> BenchOptions:
    from edgec.device_agent.power import parse_model

    model = parse_model(power_model) if power_model else None
    if model is None and "estimated" in power.split(","):
        model = profile_power_model(profile)
        if model is None:
            raise UsageError(f"--power estimated: profile {profile!r} has no power model; give "
                             "--power-model IDLE_W,ACTIVE_W")
    return BenchOptions(runs=runs, warmup=warmup, threads=threads, duration_s=duration, power=power,
                        power_command=power_command, power_model=model, idle_s=idle, sysfs_root=sysfs_root,
                        power_interval_s=power_interval)


@click.command("bench")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--device", default=LOCAL, show_default=True, help="Where to run it; 'local' is this machine.")
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
    needs_model = "estimated" in power.split(",") and not power_model
    options = _options(runs, warmup, threads, duration, power, power_command, power_model, idle, sysfs_root,
                       power_interval, profile=_device_profile(device, inventory) if needs_model else "host")
    if device != LOCAL:  # user@host[:port] or an inventory NAME: the SSH deploy layer
        from edgec.commands.farm import run_remote, ssh_options

        ssh = ssh_options(trust_new_host, connect_timeout, stall_timeout, transfer_retries)
        doc = run_remote(bundle, device, options, inventory=inventory, ssh=ssh, results=results)
    else:
        doc = run_local(bundle, options, quiet=as_json)
        if results:
            from edgec.commands.farm import store_local

            store_local(results, doc)
    print_result(doc, as_json)
