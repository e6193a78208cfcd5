"""``edgec demo``: the seed's model and a real pretrained model, float and int8, for ``host`` and ``rpi4``,
verified, benchmarked with the device agent and compared with onnxruntime's own quantizer (see
``edgec.api._demo``)."""

from __future__ import annotations

from pathlib import Path

import click

from edgec._progress import Progress
from edgec.api._demo import run_demo
from edgec.commands._output import echo_json, human_bytes, table

__all__ = ["demo_cmd"]


@click.command("demo")
@click.option("--workdir", type=click.Path(), default="build/demo", show_default=True,
              help="Where the demo writes its models, data and bundles (replaced on each run).")
@click.option("--runs", type=click.IntRange(min=2), default=100, show_default=True,
              help="Timed inferences per local benchmark.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")
@click.pass_context
def demo_cmd(ctx, workdir, runs, as_json):
    """Compile the seed's linear regression and a real pretrained model (fer's facial-expression CNN) in float
    and int8 for host and rpi4, verify and benchmark every bundle here, compare with onnxruntime's quantizer."""
    progress = Progress(enabled=None if not as_json else False)
    try:
        run = run_demo(Path(workdir), runs=runs, debug=ctx.obj.get("debug", False), progress=progress)
    finally:
        progress.close()
    if as_json:
        echo_json(run.to_dict())
        return
    _print(run)


def _cell(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _energy(power: dict | None) -> str:
    joules = (power or {}).get("energy_per_inference_j")
    if joules is None:
        return (power or {}).get("source") or "-"
    return f"{joules * 1000:.3g} mJ" + ("" if power.get("measured") else " (est.)")


def _print(run) -> None:
    rows = [[r.label, f"{r.format} {r.precision}", human_bytes(r.bytes), _cell(r.size_ratio, ".2f", "x"),
             "ok" if r.verified else "FAILED", _cell(r.p50_ms, ".3f"), _cell(r.p99_ms, ".3f"),
             _cell(r.agreement, ".1f", "%"), _energy(r.power)] for r in run.records]
    click.echo(table(rows, ["bundle", "format", "size", "vs float", "verify", "p50 ms", "p99 ms",
                            "agrees w/ float", "energy/inf."]))
    samples = next((r.agreement_samples for r in run.records if r.agreement_samples), 0)
    click.echo(f"agreement: top-1 decisions equal to the float model's on {samples} held-out faces; "
               "size: model file against the same target's float bundle")
    for r in run.records:
        if r.note:
            click.echo(f"note: {r.label}: {r.note}")
    click.echo(f"\nreport: {run.report} (open it in a browser)")
    click.echo("next, on your own model:")
    for command in run.next_commands:
        click.echo(f"  {command}")
