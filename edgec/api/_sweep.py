"""``edgec sweep``: compile variants of one model, measure accuracy on the host, benchmark them on devices and
store every outcome, so one report compares them.

A variant is ``+``-joined tokens (``fp32``, ``fp16``, ``int8``, ``int4``, ``pruneNN``, ``sparseNN``,
``lowrankNN``, ``onnx``, ``tflite``), e.g. ``prune30+int8`` or ``int8+tflite``. A variant without a precision
token is fp32 (not the profile's default), so each label means what it says. A variant that fails (a capability
this edgec lacks, a device that is down) records its error and the sweep carries on.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from edgec._progress import Progress
from edgec.api._bundles import compile as compile_bundle
from edgec.api._reports import ResultsReport, results_report
from edgec.compiler.accuracy import score
from edgec.deploy.bench import bench_device, with_power_model
from edgec.deploy.results import ResultsStore
from edgec.deploy.ssh_options import SshOptions
from edgec.device_agent.options import BenchOptions
from edgec.errors import CompileError, EdgecError, UsageError
from edgec.report.data import describe_precision
from edgec.report.evaluate import load_eval, run_bundle
from edgec.settings import HOST_PROFILE, LOCAL_DEVICE
from edgec.targets import load_profile

__all__ = ["SweepOptions", "SweepRun", "Variant", "check_applied", "parse_variants", "run_sweep", "sweep"]

_PRECISIONS = {"fp32": "none", "float": "none", "none": "none", "fp16": "fp16", "int8": "int8", "int4": "int4",
               "auto": "auto"}
_FRACTIONS = {"prune": "prune", "sparse": "sparsity", "lowrank": "low_rank"}


@dataclass(frozen=True)
class Variant:
    """One variant: its label (the spec as written) and the compile options it sets."""

    label: str
    options: dict


@dataclass
class SweepOptions:
    """Everything about a sweep besides the source and its variants."""

    target: str = HOST_PROFILE
    devices: tuple[str, ...] = (LOCAL_DEVICE,)
    workdir: Path = Path("build/sweep")
    compile_options: dict = field(default_factory=dict)  # input_shapes, calibration, eval_data, format, ...
    bench: BenchOptions = field(default_factory=BenchOptions)
    results: str | None = None
    inventory: str | None = None
    trust_new_host: bool = False


def _token(token: str, options: dict, label: str) -> None:
    if token in _PRECISIONS:
        options["quantize"] = _PRECISIONS[token]
    elif token in ("onnx", "tflite"):
        options["format"] = token
    else:
        match = re.fullmatch(r"(prune|sparse|lowrank)(\d{1,2})", token)
        if not match:
            raise UsageError(f"--variants {label!r}: unknown part {token!r}; use fp32, fp16, int8, int4, pruneNN, "
                             "sparseNN, lowrankNN, onnx or tflite joined by '+', e.g. prune30+int8")
        options[_FRACTIONS[match.group(1)]] = int(match.group(2)) / 100


def parse_variants(spec: str) -> list[Variant]:
    """``"fp32,int8,prune30+int8"`` -> variants; labels must be unique."""
    variants, seen = [], set()
    for label in (part.strip() for part in spec.split(",")):
        if not label:
            continue
        options: dict = {"quantize": "none"}
        for token in label.lower().split("+"):
            _token(token.strip(), options, label)
        if label in seen:
            raise UsageError(f"--variants: {label!r} appears twice")
        seen.add(label)
        variants.append(Variant(label, options))
    if not variants:
        raise UsageError(f"--variants {spec!r}: no variant given, e.g. --variants fp32,int8")
    return variants


def check_applied(variant: Variant, manifest: dict) -> None:
    """Raise CompileError when the bundle lacks what the variant asked for (a capability this edgec lacks is
    not silently replaced by a float bundle under the variant's name)."""
    precision = describe_precision(manifest)
    wanted = variant.options.get("quantize")
    report = manifest.get("report") or {}
    if wanted not in (None, "none", "auto") and wanted not in precision:
        reason = (report.get("quantization") or {}).get("reason") if isinstance(report.get("quantization"), dict) \
            else None
        raise CompileError(f"variant {variant.label}: asked for {wanted} but the bundle is {precision}"
                           + (f" ({reason})" if reason else " (this edgec cannot produce it yet)"))
    for key, word in (("prune", "prun"), ("sparsity", "spars"), ("low_rank", "rank")):
        if variant.options.get(key) and not any(word in str(p.get("name", "")) and p.get("modified")
                                                for p in manifest.get("passes") or []):
            raise CompileError(f"variant {variant.label}: asked for {key.replace('_', '-')} "
                               f"{variant.options[key]:g} but no pass changed the model that way "
                               "(this edgec cannot do it yet, or nothing qualified: see the compile report)")


def _error_text(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    return message if isinstance(exc, EdgecError) else f"internal error: {type(exc).__name__}: {message}"


def _variant_dir(opts: SweepOptions, variant: Variant) -> Path:
    return opts.workdir / re.sub(r"[^A-Za-z0-9_.-]+", "_", variant.label)


def _compile(source: str, variant: Variant, opts: SweepOptions, progress):
    out = _variant_dir(opts, variant)
    progress.step(f"compiling {variant.label}")
    bundle = compile_bundle(source, out, target=opts.target, force=True, **{**opts.compile_options, **variant.options})
    check_applied(variant, bundle.manifest)
    return bundle


def _accuracy(bundles: dict, baseline: str | None, opts: SweepOptions, cluster=None,
              payloads: dict | None = None) -> dict[str, dict]:
    """label -> metrics: top-1 accuracy on labelled --eval-data, else agreement with the fp32 variant's outputs
    on the evaluation or calibration samples; nothing without samples. With a cluster, each variant runs on a
    node and only the scoring happens here."""
    path = opts.compile_options.get("eval_data") or opts.compile_options.get("calibration")
    if not path or not str(path).endswith(".npz") or not bundles:
        return {label: {} for label in bundles}
    if cluster is not None:
        outputs, metrics, labels = _outputs_on_cluster(cluster, payloads, path)
    else:
        outputs, metrics, labels = _outputs_here(bundles, path)
    reference = outputs.get(baseline) if baseline else None
    for label, produced in outputs.items():
        value, metric = score(produced, labels, reference)
        metrics[label] = {"accuracy": value, "accuracy_metric": metric, "accuracy_samples": len(produced[0]),
                          "accuracy_data": Path(path).name} if value is not None else {}
    return metrics


def _outputs_here(bundles: dict, path) -> tuple[dict, dict, object]:
    outputs, metrics, labels = {}, {}, None
    for label, bundle in bundles.items():
        try:
            arrays, labels = load_eval(path, [e["name"] for e in bundle.inputs])
            outputs[label] = run_bundle(bundle, arrays, str(path))
        except Exception as exc:  # e.g. evaluation data of the wrong shape: shown for that variant in the report
            metrics[label] = {"accuracy_error": _error_text(exc)}
    return outputs, metrics, labels


def _outputs_on_cluster(cluster, payloads: dict, path) -> tuple[dict, dict, object]:
    outputs, metrics, labels = {}, {}, None
    for label, reply in cluster.eval_outputs(payloads, str(path)).items():
        if reply["error"]:
            metrics[label] = {"accuracy_error": reply["error"]["message"]}
        else:
            outputs[label] = reply["outputs"]
            labels = reply["labels"] if reply["labels"] is not None else labels
    return outputs, metrics, labels


def _baseline(variants: list[Variant]) -> str | None:
    for v in variants:
        if v.options.get("quantize") == "none" and not any(v.options.get(k) for k in _FRACTIONS.values()):
            return v.label
    return None


@dataclass
class SweepRun:
    """One outcome per (variant, device) and the report page written of them."""

    outcomes: list[dict]
    report: ResultsReport

    @property
    def ok(self) -> bool:
        return all(o["status"] == "ok" for o in self.outcomes)


def sweep(source: str, variants: str | list[Variant], out: str | os.PathLike, opts: SweepOptions | None = None,
          progress: Progress | None = None, cluster=None) -> SweepRun:
    """Compile ``source`` in every variant (``"fp32,int8,prune30+int8"`` or parsed), score and benchmark each on
    ``opts.devices``, store every outcome in ``opts.results`` and write one comparison page to ``out``.
    ``cluster``: an open ``edgec.cluster.Cluster`` whose nodes compile and score the variants."""
    opts = opts or SweepOptions()
    parsed = parse_variants(variants) if isinstance(variants, str) else list(variants)
    progress = progress or Progress(enabled=False)
    with ResultsStore(opts.results) as store:
        outcomes = run_sweep(source, parsed, opts, store, progress, cluster=cluster)
    report = results_report(out, results=opts.results, sweep=outcomes, title=f"edgec sweep: {source} for {opts.target}",
                            bundles=sorted({o["bundle_id"] for o in outcomes if o.get("bundle_id")}))
    return SweepRun(outcomes, report)


def run_sweep(source: str, variants: list[Variant], opts: SweepOptions, store, progress, cluster=None) -> list[dict]:
    """Compile, score and benchmark every variant on every device, storing each benchmark outcome in ``store``.

    With ``cluster`` (an open ``edgec.cluster.Cluster``) the compiles and accuracy runs are Ray tasks on its
    nodes; benchmarks and the results database stay with this process. Returns one outcome per (variant,
    device): label, device, status (ok | compile failed | bench failed), bundle_id, run_id, metrics, error,
    compile_node (the cluster node that compiled it, else None).
    """
    sweep_id = uuid.uuid4().hex[:12]
    if cluster is None:
        bundles, failed, payloads, nodes = *_compile_here(source, variants, opts, progress), None, {}
    else:
        progress.step(f"compiling {len(variants)} variants on the cluster")
        bundles, failed, payloads, nodes = _compile_on_cluster(source, variants, opts, cluster)
    outcomes = [{"label": label, "device": d, "device_spec": d, "status": "compile failed", "bundle_id": None,
                 "run_id": None, "metrics": {}, "error": error, "compile_node": nodes.get(label)}
                for label, error in failed.items() for d in opts.devices]
    progress.step("measuring accuracy" + (" on the cluster" if cluster is not None else " on the host"))
    baseline = _baseline(variants)
    metrics = _accuracy(bundles, baseline if baseline in bundles else None, opts, cluster, payloads)
    for label, bundle in bundles.items():
        for device in opts.devices:
            progress.step(f"benchmarking {label} on {device}")
            outcome = _bench_and_store(bundle, label, device, metrics.get(label, {}), sweep_id, opts, store,
                                       nodes.get(label))
            outcomes.append({**outcome, "compile_node": nodes.get(label)})
    order = {v.label: k for k, v in enumerate(variants)}
    return sorted(outcomes, key=lambda o: (order[o["label"]], list(opts.devices).index(o["device_spec"])))


def _compile_here(source: str, variants: list[Variant], opts: SweepOptions, progress) -> tuple[dict, dict]:
    bundles, failed = {}, {}
    for variant in variants:
        try:
            bundles[variant.label] = _compile(source, variant, opts, progress)
        except Exception as exc:  # a missing capability or a stage bug fails only its variant
            failed[variant.label] = _error_text(exc)
    return bundles, failed


def _compile_on_cluster(source: str, variants: list[Variant], opts: SweepOptions, cluster):
    """Every variant as a Ray task; bundles written here atomically. (bundles, failed, payload refs, nodes)."""
    profile = load_profile(opts.target)  # resolved here: `host` means this machine, not the worker
    jobs = {v.label: {**opts.compile_options, **v.options, "target": opts.target} for v in variants}
    replies = cluster.compile_variants(source, jobs, profile)
    bundles, failed, payloads, nodes = {}, {}, {}, {}
    for variant in variants:
        meta, ref = replies[variant.label]
        nodes[variant.label] = meta["node"]
        if meta["error"]:
            failed[variant.label] = " ".join(meta["error"]["message"].split())
            continue
        bundle = cluster.fetch_bundle(ref, _variant_dir(opts, variant))
        try:
            check_applied(variant, bundle.manifest)
        except CompileError as exc:
            failed[variant.label] = _error_text(exc)
            continue
        bundles[variant.label], payloads[variant.label] = bundle, ref
    return bundles, failed, payloads, nodes


def _bench_and_store(bundle, label: str, device: str, metrics: dict, sweep_id: str, opts: SweepOptions,
                     store, compile_node: str | None = None) -> dict:
    outcome = {"label": label, "device": device, "device_spec": device, "bundle_id": bundle.bundle_id,
               "metrics": metrics}
    sweep = {"id": sweep_id, "label": label, "metrics": metrics}
    if compile_node:
        sweep["compile_node"] = compile_node
    try:
        # auto = the device's sensors, else its profile's power model (marked estimated), else none
        options = with_power_model(opts.bench, device, opts.inventory, fallback_profile=opts.target,
                                   estimate_when_auto=True)
        run = bench_device(bundle, device, options, inventory=opts.inventory,
                           ssh=SshOptions(trust_new_host=opts.trust_new_host))
    except EdgecError as exc:
        run_id = store.record(bundle_id=bundle.bundle_id, device=device, profile=opts.target, error=exc)
        return {**outcome, "status": "bench failed", "run_id": run_id, "error": _error_text(exc)}
    profile = opts.target if run.device == LOCAL_DEVICE else run.target
    run_id = store.record(bundle_id=bundle.bundle_id, device=run.device, address=run.address, profile=profile,
                          result={**run.result, "manifest": bundle.manifest, "sweep": sweep})
    return {**outcome, "device": run.device, "status": "ok", "run_id": run_id, "error": None,
            "latency_ms_p50": run.result["latency_ms"]["p50"]}
