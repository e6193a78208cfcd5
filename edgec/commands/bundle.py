"""``edgec inspect`` and ``edgec verify``: look at and re-check a bundle."""

from __future__ import annotations

import click

from edgec import api
from edgec.commands._output import echo_json
from edgec.commands.compile import print_summary

__all__ = ["inspect_cmd", "verify_cmd"]


@click.command("inspect")
@click.argument("bundle", type=click.Path())
@click.option("--explain", is_flag=True, help="Print every pass's decisions and reasons.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def inspect_cmd(bundle, explain, as_json):
    """Show a bundle's manifest and compile report.

    \b
    Example:
      edgec inspect build/model-rpi4 --explain
    """
    if as_json:
        echo_json(api.inspect_bundle(bundle))
        return
    opened = api.Bundle(bundle)
    print_summary(opened, explain)
    m = opened.manifest
    click.echo(f"source   {m['source']['path']} ({m['source']['kind']}, sha256 {m['source']['sha256'][:16]})")
    click.echo(f"files    {len(m['files'])}: " + ", ".join(sorted(m["files"])))


@click.command("verify")
@click.argument("bundle", type=click.Path())
@click.option("--threads", type=int, help="Runtime threads.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify_cmd(bundle, threads, as_json):
    """Re-check a bundle: sha256 of every file, then the reference inputs through its runtime.

    \b
    Example:
      edgec verify build/model-rpi4
    """
    result = api.verify_bundle(bundle, threads=threads)
    if as_json:
        echo_json(result)
        return
    diffs = ", ".join(f"{r['name']} rel {r['rel_diff']:.1e}" for r in result["outputs"])
    click.echo(f"ok: {bundle}: all file hashes match; reference outputs reproduced ({diffs})")
