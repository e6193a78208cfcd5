"""``edgec targets``: list and show target profiles."""

from __future__ import annotations

import click

from edgec.commands._output import echo_json, table

__all__ = ["targets_group"]


@click.group("targets")
def targets_group():
    """List, show and calibrate target profiles."""


@targets_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(as_json):
    """List known targets: built-in, your own (~/.edgec/targets) and the detected host."""
    from edgec.targets import list_profiles, load_profile

    profiles = [load_profile(name) for name in list_profiles()]
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
    from edgec.targets import load_profile

    profile = load_profile(name)
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
