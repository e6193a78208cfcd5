"""``edgec estimate BUNDLE|SOURCE --target NAME``: predicted latency, peak memory, storage and energy."""

from __future__ import annotations

import click

from edgec import api
from edgec.commands._output import echo_json, human_bytes, table

__all__ = ["estimate_cmd", "print_estimate"]


def print_estimate(report: dict, verbose: bool) -> None:
    memory, storage, energy = report["memory"], report["storage"], report["energy"]
    click.echo(f"target   {report['target']} ({report['runtime']}, {report['threads']} threads)")
    click.echo(f"latency  {report['latency_ms']:.4g} ms   ({report['latency_basis']})")
    fits = "fits" if memory["fits"] else "DOES NOT FIT"
    click.echo(f"memory   {human_bytes(memory['peak_bytes'])} peak of {human_bytes(memory['ram_bytes'])} RAM, {fits} "
               f"(weights {human_bytes(memory['weights_bytes'])}, arena {human_bytes(memory['arena_bytes'])}; "
               f"{memory['basis']})")
    fits = "fits" if storage["fits"] else "DOES NOT FIT"
    click.echo(f"storage  {human_bytes(storage['bytes'])} of {human_bytes(storage['storage_bytes'])}, {fits} "
               f"({storage['basis']})")
    joules = energy["joules"]
    click.echo(f"energy   {'-' if joules is None else f'{joules * 1000:.4g} mJ'} per inference ({energy['basis']})")
    rows = sorted(report["ops"], key=lambda r: -r["ms"])
    shown = rows if verbose else rows[:15]
    click.echo("")
    click.echo(table([[r["node"][-36:], r["class"], r["precision"], f"{r['flops'] / 1e6:.3g}", f"{r['ms'] * 1000:.1f}",
                       r["basis"]] for r in shown], ["node", "class", "precision", "MFLOP", "us", "basis"]))
    if len(rows) > len(shown):
        click.echo(f"... {len(rows) - len(shown)} more ops (--all shows every op)")


@click.command("estimate")
@click.argument("source")
@click.option("-t", "--target", default="host", show_default=True, help="Profile name or .toml file.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=1x3x224x224",
              help="Shape of an input (repeatable); for factories and TorchScript sources.")
@click.option("--all", "show_all", is_flag=True, help="Show every op, not only the 15 slowest.")
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON.")
def estimate_cmd(source, target, input_shapes, show_all, as_json):
    """Predict latency, peak memory, storage and energy of SOURCE (a bundle or any compile source) on a target.

    Per-op latency comes from the target's measured kernels (`edgec targets calibrate`) scaled to each op's
    FLOPs/bytes, else from a roofline of its compute and bandwidth figures; every figure says its basis.

    \b
    Example:
      edgec targets calibrate --device local --as host
      edgec estimate model-host.bundle --target host
    """
    report = api.estimate(source, target, api.parse_input_shapes(input_shapes))
    if as_json:
        echo_json(report)
        return
    print_estimate(report, show_all)
