"""``edgec targets``: list and show target profiles."""

from __future__ import annotations

import click

from edgec import api
from edgec.commands._output import echo_json, table
from edgec.settings import LOCAL_DEVICE

__all__ = ["targets_group"]


@click.group("targets")
def targets_group():
    """List, show and calibrate target profiles."""


@targets_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(as_json):
    """List known targets: built-in, your own (~/.edgec/targets) and the detected host."""
    profiles = [api.load_profile(name) for name in api.list_profiles()]
    if as_json:
        echo_json([{"name": p.name, "description": p.description, "format": p.runtime.format,
                    "runtime": p.runtime.preferred, "source": p.source_file} for p in profiles])
        return
    rows = [[p.name, p.cpu.arch, p.cpu.cores, p.runtime.format, p.quantization.default, p.description]
            for p in profiles]
    click.echo(table(rows, ["name", "arch", "cores", "format", "precision", "description"]))


@targets_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_cmd(name, as_json):
    """Show every field of a target profile (NAME or path to a .toml file).

    \b
    Example:
      edgec targets show rpi4
    """
    profile = api.load_profile(name)
    data = profile.to_dict()
    if as_json:
        echo_json({**data, "source_file": profile.source_file, "sha256": profile.sha256})
        return
    click.echo(f"{profile.name}: {profile.description}")
    click.echo(f"  from {profile.source_file}" + (f" (base {profile.base})" if profile.base else ""))
    for section in ("cpu", "memory", "runtime", "quantization", "ops", "power"):
        click.echo(f"[{section}]")
        for key, value in data[section].items():
            click.echo(f"  {key} = {value}")
    figures = data["performance"]["figures"]
    if figures:
        click.echo("[performance]")
        for f in figures:
            click.echo(f"  {f['model']} {f['runtime']} {f['precision']}: {f['latency_ms']} ms "
                       f"({f['threads']} threads; {f['source']})")
    measured = profile.performance.measured
    if measured:
        ok = sum(1 for k in measured.kernels if k.status == "ok")
        click.echo(f"[performance.measured] {ok}/{len(measured.kernels)} kernels measured on {measured.device} "
                   f"({measured.date}; {', '.join(f'{n} {v}' for n, v in sorted(measured.runtimes.items()))}; "
                   f"{measured.system.threads} thread(s))")


@targets_group.command("calibrate")
@click.option("--device", "device_spec", default=LOCAL_DEVICE, show_default=True,
              help="local, user@host[:port], or a device NAME from the inventory.")
@click.option("--as", "name", default=None, help="Name of the new target [default: host for local, else the device].")
@click.option("--base", default=None, help="Profile the overlay extends [default: detected / inventory target / guess].")
@click.option("--quick", is_flag=True, help="A short suite (fewer shapes and runs): for tests and smoke checks.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Runtime threads of the tables [default: the fewest within 5% of the fastest, measured].")
@click.option("--inventory", type=click.Path(dir_okay=False), default=None, help="Device inventory TOML.")
@click.option("--trust-new-host", is_flag=True, help="Record an unknown SSH host key on first use.")
@click.option("--sysfs-root", default="/sys", show_default=True, help="Where the power sensors are (tests: a fake tree).")
@click.option("--json", "as_json", is_flag=True, help="Print the overlay as JSON (no progress).")
@click.option("--cluster", default=None, metavar="ADDRESS",
              help="Measure an inventory device from the Ray node of its site (local, auto, HOST:PORT or "
                   "ray://HOST:PORT) [default: $EDGEC_CLUSTER, else from this machine]; the overlay is written here.")
def calibrate_cmd(device_spec, name, base, quick, threads, inventory, trust_new_host, sysfs_root, as_json, cluster):
    """Measure a device with micro-benchmarks and save a profile overlay usable as --target NAME.

    Runs fp32/fp16/int8 Conv 1x1/3x3, depthwise, Gemm, pooling and elementwise kernels at representative
    shapes through the device agent, plus overhead, bandwidth, thread scaling, load time, memory and power
    (when a sensor exists). Writes $EDGEC_HOME/targets/NAME.toml (default ~/.edgec/targets).

    \b
    Example:
      edgec targets calibrate --device local --as host
      edgec targets calibrate --device pi@192.168.1.40 --as my-pi --base rpi4
    """
    import sys

    def progress(message):
        if not as_json and sys.stderr.isatty():
            click.echo(f"\r  {message}\033[K", err=True, nl=False)

    from edgec.cluster import calibrate_target as calibrate_on_cluster
    from edgec.cluster import cluster_address

    address = cluster_address(cluster)
    if address and device_spec != LOCAL_DEVICE:  # `local` is this machine, whatever cluster it belongs to
        path, doc = calibrate_on_cluster(address, device_spec, name, base, quick=quick, threads=threads,
                                         inventory=inventory, ssh=api.SshOptions(trust_new_host=trust_new_host),
                                         sysfs_root=sysfs_root)
    else:
        path, doc = api.calibrate_target(device_spec, name, base, quick=quick, threads=threads, inventory=inventory,
                                         trust_new_host=trust_new_host, progress=progress, sysfs_root=sysfs_root)
    if not as_json and sys.stderr.isatty():
        click.echo("", err=True)
    if as_json:
        echo_json({"path": str(path), **doc})
        return
    measured = doc["performance"]["measured"]
    system, kernels = measured["system"], measured["kernels"]
    ok = sum(1 for k in kernels if k["status"] == "ok")
    click.echo(f"wrote {path} (base {doc['base']}); use it as --target {doc['name']}")
    click.echo(f"  {ok}/{len(kernels)} kernels measured on {measured['device']} at {system['threads']} thread(s); "
               f"overhead {system['overhead_ms'] * 1000:.1f} us/inference, bandwidth {system['bandwidth_gbps']:g} GB/s, "
               f"thread speed-up {system['thread_speedup']}, power {system['power_source']}")
    for note in measured["notes"]:
        click.echo(f"  note: {note}")
