"""``edgec sweep``: compile variants of one model, benchmark them on devices, store results, write the report."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgec import api
from edgec._progress import Progress
from edgec.commands._output import echo_json, table
from edgec.device_agent.options import BenchOptions
from edgec.settings import LOCAL_DEVICE

__all__ = ["sweep_cmd"]

@click.command("sweep")
@click.argument("source")
@click.option("-t", "--target", default="host", show_default=True, help="Profile name or .toml file.")
@click.option("--variants", required=True, metavar="LIST",
              help="Comma list of variants, each '+'-joined: fp32, fp16, int8, int4, pruneNN, sparseNN, lowrankNN, "
                   "onnx, tflite. Example: fp32,int8,int4,prune30+int8,int8+tflite")
@click.option("--device", "devices", multiple=True, default=(LOCAL_DEVICE,), show_default=True,
              help="Where to benchmark: local, user@host[:port] or an inventory NAME (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["onnx", "tflite"]), help="Default format of variants "
              "[default: the profile's].")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=1x3x224x224", help="Input shape.")
@click.option("--calibration", type=click.Path(), help="Calibration data for quantized variants.")
@click.option("--calibration-method", type=click.Choice(["minmax", "entropy", "percentile", "mse"]))
@click.option("--preprocess", help="Image preprocessing spec (see edgec compile).")
@click.option("--eval-data", type=click.Path(), help="Labelled .npz: top-1 accuracy of every variant.")
@click.option("--max-accuracy-drop", type=float, help="Accuracy budget in points for quantized variants.")
@click.option("--runs", type=click.IntRange(min=2), default=100, show_default=True, help="Timed inferences.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Runtime threads on the device.")
@click.option("--power", default="auto", show_default=True,
              help="Power source (see edgec bench); auto = the device's sensors, else the profile's power model "
                   "(marked estimated in the report).")
@click.option("--idle", type=click.FloatRange(min=0), default=0.5, show_default=True,
              help="Seconds of idle power sampling before timing.")
@click.option("--workdir", type=click.Path(file_okay=False), default="build/sweep", show_default=True,
              help="Where the variant bundles are written (each replaced).")
@click.option("--results", type=click.Path(dir_okay=False), default=None,
              help="Results database (default ~/.edgec/results.db).")
@click.option("--inventory", type=click.Path(dir_okay=False), default=None, help="Device inventory TOML.")
@click.option("--trust-new-host", is_flag=True, help="Record an unknown SSH host key on first use.")
@click.option("--trust-source", is_flag=True, help="Let the model file run its own code (see edgec compile --help).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), required=True, help="HTML report to write.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome of every variant as JSON.")
@click.option("--cluster", default=None, metavar="ADDRESS",
              help="Compile and score the variants on a Ray cluster: local, auto, HOST:PORT or ray://HOST:PORT "
                   "[default: $EDGEC_CLUSTER, else this machine without Ray].")
@click.pass_context
def sweep_cmd(ctx, source, target, variants, devices, fmt, input_shapes, calibration, calibration_method,
              preprocess, eval_data, max_accuracy_drop, runs, warmup, threads, power, idle, workdir, results,
              inventory, trust_new_host, seed, out, as_json, cluster, trust_source=False):
    """Compile SOURCE in every variant for a target, measure accuracy on the host, benchmark each variant on
    the device(s), store the results and write one comparison report (exit code 8 if a variant failed)."""
    import contextlib

    from edgec.cluster import cluster_address, open_cluster

    compile_options = {k: v for k, v in dict(
        format=fmt, input_shapes=api.parse_input_shapes(input_shapes), calibration=calibration,
        calibration_method=calibration_method, preprocess=preprocess, eval_data=eval_data,
        max_accuracy_drop=max_accuracy_drop, seed=seed, trust_source=trust_source or None).items() if v is not None}
    opts = api.SweepOptions(target=target, devices=tuple(devices), workdir=Path(workdir),
                            compile_options=compile_options,
                            bench=BenchOptions(runs=runs, warmup=warmup, threads=threads, power=power, idle_s=idle),
                            results=results, inventory=inventory, trust_new_host=trust_new_host)
    progress = Progress(enabled=None if not as_json else False)
    address = cluster_address(cluster)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    on_cluster = open_cluster(address, progress=progress.enabled, log=Path(workdir) / "ray.log") if address \
        else contextlib.nullcontext()
    try:
        with on_cluster as remote:
            run = api.sweep(source, variants, out, opts, progress, cluster=remote)
    finally:
        progress.close()
    path, outcomes = run.report.path, run.outcomes
    if as_json:
        echo_json({"report": str(path), "outcomes": outcomes})
    else:
        click.echo(table([[o["label"], o["device"], o["status"], (o.get("bundle_id") or "")[:12],
                           "" if o.get("latency_ms_p50") is None else f"{o['latency_ms_p50']:.4g}",
                           "" if o["metrics"].get("accuracy") is None else f"{o['metrics']['accuracy']:.2f}",
                           o.get("error") or ""] for o in outcomes],
                         ["variant", "device", "status", "bundle", "p50 ms", "accuracy", "error"]))
        click.echo(f"report   {path}")
    if not run.ok:
        sys.exit(8)
