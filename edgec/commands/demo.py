"""``edgec demo``: build example models, compile them for ``rpi4`` and ``host``, verify, benchmark locally.

Everything is made here: the seed's Keras linear regression (fitted on y = 2x + 1) and a MobileNetV2-style
PyTorch CNN. Variants that need a capability this installation lacks (e.g. TFLite emission) are skipped with
the reason printed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from edgec import api
from edgec._capture import captured_output
from edgec._progress import Progress
from edgec.commands._output import echo_json, human_bytes, table
from edgec.compiler.emit import EMITTERS
from edgec.device_agent.power import AUTO_ORDER
from edgec.examples.keras_models import save_linear_regression
from edgec.settings import LOCAL_DEVICE

__all__ = ["demo_cmd"]

CNN = "edgec.examples.torch_models:tiny_mobilenet"
CNN_SHAPE = {"x": [1, 3, 64, 64]}


def _variants(h5: Path) -> list[dict]:
    """(label, source, compile options, bench locally?) for every bundle the demo makes."""
    tflite = "tflite" in EMITTERS
    variants = [
        {"label": "linreg rpi4", "source": str(h5), "target": "rpi4",
         "options": {"format": "tflite" if tflite else "onnx"}, "bench": tflite},
        {"label": "linreg host", "source": str(h5), "target": "host", "options": {"format": "onnx"}, "bench": True},
        {"label": "cnn rpi4", "source": CNN, "target": "rpi4",
         "options": {"format": "tflite" if tflite else "onnx", "input_shapes": CNN_SHAPE}, "bench": tflite},
        {"label": "cnn host", "source": CNN, "target": "host",
         "options": {"format": "onnx", "input_shapes": CNN_SHAPE}, "bench": True},
    ]
    if not tflite:
        for v in variants[::2]:
            v["note"] = "TFLite emission not installed: rpi4 bundle emitted as ONNX"
    return variants


def _bench(bundle_path: Path, runs: int, results: Path) -> dict:
    # No power sensor on most dev machines: the sensors in their usual order, then the host profile's
    # estimate, which the result labels "estimated" (as `edgec sweep` does).
    return api.bench(bundle_path, LOCAL_DEVICE, results=results, runs=runs, warmup=10, idle_s=0.5,
                     power=",".join([*AUTO_ORDER, "estimated"])).result


@click.command("demo")
@click.option("--workdir", type=click.Path(), default="build/demo", show_default=True,
              help="Where the demo writes its models and bundles (replaced on each run).")
@click.option("--runs", type=int, default=100, show_default=True, help="Timed inferences per local benchmark.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")
@click.pass_context
def demo_cmd(ctx, workdir, runs, as_json):
    """Build example models, compile them for rpi4 and host, verify the bundles, benchmark the local ones."""
    workdir = Path(workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "models").mkdir(parents=True)
    progress = Progress(enabled=None if not as_json else False)
    progress.step("building the seed's Keras linear regression (fit y = 2x + 1)")
    with captured_output(workdir / "models" / "build.log", enabled=not ctx.obj.get("debug")):
        h5 = save_linear_regression(workdir / "models" / "linear_regression_model.h5")
    records = []
    for variant in _variants(h5):
        progress.step(f"compiling {variant['label']}")
        out = workdir / variant["label"].replace(" ", "-")
        bundle = api.compile(variant["source"], out, target=variant["target"], debug=ctx.obj.get("debug", False),
                             **variant["options"])
        check = api.verify_bundle(out)
        record = {"label": variant["label"], "bundle": str(out), "format": bundle.format,
                  "target": variant["target"], "bytes": bundle.manifest["files"][bundle.manifest["model_file"]]["size"],
                  "max_rel_diff": max(c["max_rel_diff"] for c in bundle.manifest["report"]["verification"]),
                  "verified": check["ok"], "note": variant.get("note", "")}
        if variant["bench"]:
            progress.step(f"benchmarking {variant['label']} on this machine")
            result = _bench(out, runs, workdir / "results.db")
            record["bench"] = {"p50_ms": result["latency_ms"]["p50"], "p99_ms": result["latency_ms"]["p99"],
                               "power": result["power"]}
        records.append(record)
    progress.step("writing the HTML report")
    report = api.results_report(workdir / "report.html", results=workdir / "results.db", title="edgec demo").path
    progress.close()
    if as_json:
        echo_json({"workdir": str(workdir), "bundles": records, "report": str(report)})
        return
    _print(records, workdir)
    click.echo(f"report: {report} (open it in a browser; `edgec report --results {workdir}/results.db` redoes it)")


def _energy(power: dict) -> str:
    joules = power.get("energy_per_inference_j")
    if joules is None:
        return power.get("source") or "none"
    basis = f"measured, {power.get('source')}" if power.get("measured") else "estimated from the profile"
    return f"{joules * 1000:.3g} mJ ({basis})"


def _print(records: list[dict], workdir: Path) -> None:
    rows = []
    for r in records:
        bench = r.get("bench")
        rows.append([r["label"], r["format"], human_bytes(r["bytes"]), f"{r['max_rel_diff']:.1e}",
                     "ok" if r["verified"] else "FAILED",
                     f"{bench['p50_ms']:.3f}" if bench else "-", f"{bench['p99_ms']:.3f}" if bench else "-",
                     _energy(bench["power"]) if bench else "-"])
    click.echo(table(rows, ["bundle", "format", "size", "max rel diff", "verify", "p50 ms", "p99 ms",
                            "energy/inference"]))
    for r in records:
        if r["note"]:
            click.echo(f"note: {r['label']}: {r['note']}")
    click.echo(f"\nbundles in {workdir}/ ; look inside one with: edgec inspect {records[-1]['bundle']} --explain")
