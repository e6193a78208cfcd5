"""``edgec compile``: source model -> verified bundle for a target."""

from __future__ import annotations

import click

from edgec import api
from edgec._progress import Progress
from edgec.commands._output import echo_json, human_bytes
from edgec.compare import FLOAT_ATOL, FLOAT_RTOL

__all__ = ["PruneRatio", "compile_cmd", "print_notices", "print_summary"]


class PruneRatio(click.ParamType):
    """A fraction such as 0.3, or 'auto'."""

    name = "ratio|auto"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, float) or value == "auto":
            return value
        try:
            return float(value)
        except ValueError:
            self.fail(f"{value!r}: give a fraction such as 0.3, or 'auto'", param, ctx)


@click.command("compile")
@click.argument("source")
@click.option("-t", "--target", default="host", show_default=True, help="Profile name (see `edgec targets list`) or a .toml file.")
@click.option("-o", "--output", "out", type=click.Path(), help="Bundle directory to write [default: <stem>-<target>.bundle].")
@click.option("--format", "fmt", type=click.Choice(["auto", "onnx", "tflite"]), help="Model format [default: auto: the profile's, falling back to the device's other runtime when conversion fails].")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="[NAME=]1x3x224x224", help="Shape of an input (repeatable; NAME= may be left out for a one-input model; N or -1 leaves a dimension dynamic).")
@click.option("--quantize", type=click.Choice(["none", "fp16", "int8", "int4", "auto"]), help="Precision [default: the profile's].")
@click.option("--calibration", type=click.Path(), help="Calibration data: .npz, an image directory, or file.py:function / module:function (RUNS that code).")
@click.option("--calibration-method", type=click.Choice(["minmax", "entropy", "percentile", "mse"]), help="Activation range method [default: the profile's].")
@click.option("--preprocess", help="Image preprocessing, e.g. resize=224,mean=0.485:0.456:0.406,std=0.229:0.224:0.225,layout=nchw.")
@click.option("--eval-data", type=click.Path(), help="Labelled .npz (inputs + labels) to measure accuracy.")
@click.option("--max-accuracy-drop", type=float, help="Accuracy budget in points [default: the profile's].")
@click.option("--prune", type=PruneRatio(), help="Fraction of filters to remove (structured pruning), e.g. 0.3, or 'auto' (the strongest within the accuracy budget).")
@click.option("--recover-time", type=float, help="Seconds of distillation on calibration data after pruning [default: 180 with --calibration; 0 = off].")
@click.option("--max-latency", type=float, metavar="MS", help="Prune until the target's estimated latency is at most MS milliseconds.")
@click.option("--prune-rules", type=click.Path(), help="TOML file of per-layer pruning ratios.")
@click.option("--prune-spread", type=click.Choice(["channels", "parameters"]), help="Spread --prune over layers by sensitivity per channel (faster model) or per parameter a channel holds (smaller model for the same accuracy) [default: channels].")
@click.option("--sparsity", type=float, help="Fraction of weights to zero (unstructured), compressed bundle.")
@click.option("--low-rank", type=float, help="Factorise large Gemm/MatMul weights keeping this fraction of energy.")
@click.option("--rtol", type=float, default=FLOAT_RTOL, show_default=True, help="Float stages match the source when |a-b| <= atol + rtol*|ref| per element.")
@click.option("--atol", type=float, default=FLOAT_ATOL, show_default=True, help="Absolute part of that tolerance.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of generated inputs and sampling.")
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
@click.option("--ignore-limits", is_flag=True, help="Compile even if the estimate exceeds the target's RAM or storage.")
@click.option("--explain", is_flag=True, help="Print every pass's decisions and reasons.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON (no progress).")
@click.option("--trust-source", is_flag=True, help="Let the model file run its own code (Keras Lambda/custom objects, pickles in .pt2, side-effecting SavedModel ops); refused by default.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Also write the compile report as HTML.")
@click.pass_context
def compile_cmd(ctx, source, target, out, fmt, input_shapes, quantize, calibration, calibration_method, preprocess,
                eval_data, max_accuracy_drop, prune, recover_time, max_latency, prune_rules, prune_spread, sparsity, low_rank, rtol, atol, seed, force,
                explain, as_json, report_path, ignore_limits=False, trust_source=False):
    """Compile SOURCE (.onnx, .keras, .h5, SavedModel dir, .pt2, TorchScript, file.py:factory) for a target.

    \b
    What runs code: SOURCE or --calibration written as file.py:function or module:function imports and runs
    that Python code (that is what it is for). Model files are untrusted: constructs that would run code from
    the file (Keras Lambda layers and custom objects, pickles in .pt2 archives, file/network/Python ops in a
    SavedModel) are refused unless you pass --trust-source.

    \b
    Example:
      edgec compile model.keras --target rpi4 -o build/model-rpi4
      edgec compile nets.py:mobilenet --input-shape x=1x3x224x224 --target x86-avx2 --format onnx
    """
    debug = ctx.obj.get("debug", False)
    bundle = api.compile(
        source, out, progress=Progress(enabled=None if not as_json else False, total=0), debug=debug,
        target=target, format=fmt, quantize=quantize, input_shapes=api.parse_input_shapes(input_shapes),
        calibration=calibration, calibration_method=calibration_method, preprocess=preprocess, eval_data=eval_data,
        max_accuracy_drop=max_accuracy_drop, prune=prune, recover_time=recover_time, max_latency=max_latency,
        prune_rules=prune_rules, prune_spread=prune_spread, sparsity=sparsity,
        low_rank=low_rank, rtol=rtol, atol=atol, seed=seed, force=force, ignore_limits=ignore_limits,
        trust_source=trust_source,
    )
    print_notices(bundle.manifest["report"])
    if report_path:
        api.compile_report(bundle, report_path)
    if as_json:
        echo_json({"bundle_id": bundle.bundle_id, "path": str(bundle.path), **bundle.manifest})
        return
    print_summary(bundle, explain)


def print_summary(bundle, explain: bool = False) -> None:
    m = bundle.manifest
    size = m["report"]["size"]
    click.echo(f"bundle   {bundle.path}  ({m['format']}, {m['runtime']['name']}, target {m['target']['name']})")
    click.echo(f"id       {bundle.bundle_id[:16]}")
    ratio = size["model_bytes"] / size["float_model_bytes"] if size.get("float_model_bytes") else 1.0
    click.echo(f"model    {m['model_file']}  {human_bytes(size['model_bytes'])}  ({ratio:.2f}x the float model)")
    for io_kind in ("inputs", "outputs"):
        for item in m["io"][io_kind]:
            shape = "x".join("?" if d is None else str(d) for d in item["shape"] or [])
            click.echo(f"{io_kind[:-1]:<8} {item['name']}  {item['dtype']}[{shape}]  {item['layout']}")
    _print_decisions(m["report"])
    for check in m["report"]["verification"]:
        click.echo(f"verify   {check['stage']:<16} max rel diff {check['max_rel_diff']:.2e}  "
                   f"max abs diff {check['max_abs_diff']:.2e}  ({check['samples']} samples)")
    estimate = m["report"].get("estimate")
    if estimate:  # edgec.targets.estimate; `edgec estimate BUNDLE` prints the per-op table
        click.echo(f"estimate {estimate['latency_ms']:.4g} ms, {human_bytes(estimate['memory']['peak_bytes'])} peak "
                   f"memory on {m['target']['name']} ({estimate['latency_basis']})")
    for key, value in sorted(m["report"].items()):
        if key in ("accuracy",) and isinstance(value, dict):
            click.echo(f"accuracy {value.get('summary', value)}")
    click.echo(f"passes   {', '.join(p['name'] for p in m['passes'])}")
    if explain:
        for record in m["passes"]:
            click.echo(f"\n[{record['name']}] {record.get('settings') or ''}")
            for note in record.get("notes", []):
                click.echo(f"  - {note}")
        for note in m["report"].get("source_notes", []):
            click.echo(f"  - source: {note}")


def print_notices(report: dict) -> None:
    """On stderr, also with --json: what edgec did differently from what was asked (a format fallback, an
    already quantized source kept as it is) or on what it based a decision (a roofline latency estimate)."""
    fallback = (report.get("format") or {}).get("fallback")
    if fallback:
        click.echo(f"edgec: note: {fallback['from']} conversion failed ({fallback['reason']}); fell back to "
                   f"{fallback['to']}", err=True)
    search = (report.get("compression") or {}).get("search") or {}
    if search.get("notice"):
        click.echo(f"edgec: note: {search['notice']}", err=True)
    quant = report.get("quantization") or {}
    if quant.get("precision") == "already quantized":
        click.echo(f"edgec: note: {quant['reason']}", err=True)


def _print_decisions(report: dict) -> None:
    """The lines saying what edgec chose: the format and why, pinned shapes, the inputs verified on."""
    fmt = report.get("format") or {}
    if fmt:
        fallback = fmt.get("fallback")
        click.echo(f"format   {fmt['chosen'] if not fallback else fallback['to']}: "
                   + (f"fallback from {fallback['from']} ({fallback['reason']})" if fallback else fmt["reason"]))
    for pinned in (report.get("tflite") or {}).get("pinned", []):
        click.echo(f"pinned   {pinned} (TFLite has fixed shapes)")
    inputs = report.get("verification_inputs")
    if inputs:
        click.echo(f"inputs   verified on {inputs['source']}; {inputs['dynamic']}")
