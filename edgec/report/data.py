"""What a results report shows, read from the results database (and bundle manifests where they are found).

A stored run holds the agent's BenchResult document. Runs made by ``edgec sweep`` also carry the bundle's
manifest and the sweep's variant label and host-measured accuracy (``doc["manifest"]``, ``doc["sweep"]``), so
the report can place them on the accuracy/latency/size plot from the database alone. For other runs the
manifest is read from a ``--bundle DIR`` given to the report, or from the bundle path in the document when that
directory still holds the same bundle; failing both, the report shows what the document itself says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgec.bundle import Bundle
from edgec.compare import FLOAT_REFERENCE_RTOL as _FLOAT_RTOL
from edgec.device_agent.schema import result_problem
from edgec.errors import BundleError, InputError, ResultsError

__all__ = ["BundleInfo", "ReportData", "Run", "accuracy_of", "collect", "describe_precision"]


@dataclass
class Run:
    """One stored outcome: a BenchResult (``result``) or an error."""

    id: int
    created_at: str
    bundle_id: str
    device: str
    profile: str | None
    status: str
    error: str | None = None
    result: dict | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.result is not None


@dataclass
class BundleInfo:
    """What the report knows about a bundle."""

    bundle_id: str
    name: str
    label: str
    format: str | None = None
    target: str | None = None
    precision: str = "?"
    model_bytes: int | None = None
    source: str = ""
    manifest: dict | None = None
    metrics: dict = field(default_factory=dict)

    @property
    def short(self) -> str:
        return self.bundle_id[:12]


@dataclass
class ReportData:
    """Runs oldest first, the bundles they ran, and (for ``edgec sweep``) the outcome of every variant."""

    runs: list[Run]
    bundles: dict[str, BundleInfo]
    results_path: str
    title: str = "edgec benchmark report"
    sweep: list[dict] | None = None
    live: list[dict] = field(default_factory=list)  # the services' samples over time (edgec farm status)
    rollouts: list[dict] = field(default_factory=list)  # deploys and rollbacks (edgec deploy/rollback)
    min_change: float = 0.05  # smallest relative change in median latency flagged (regression.MIN_CHANGE)

    def devices(self) -> list[str]:
        return sorted({r.device for r in self.runs})

    def latest(self, bundle_id: str, device: str) -> Run | None:
        """The newest successful run of a bundle on a device."""
        ok = [r for r in self.runs if r.bundle_id == bundle_id and r.device == device and r.ok]
        return ok[-1] if ok else None


def describe_precision(manifest: dict) -> str:
    """A short precision/compression label from a manifest: fp32, int8, fp16, ... plus "+pruned".

    What was emitted wins (the TFLite emitter's ``variant``), then what the quantization stage chose
    (``precision``), then the reference tolerance (wider for quantized bundles).
    """
    report = manifest.get("report") or {}
    tflite, quantization = report.get("tflite"), report.get("quantization")
    precision = None
    if isinstance(tflite, dict) and isinstance(tflite.get("variant"), str):
        precision = tflite["variant"]
    elif isinstance(quantization, dict) and isinstance(quantization.get("precision"), str):
        precision = quantization["precision"]
    if not precision:
        rtol = (manifest.get("reference") or {}).get("rtol", _FLOAT_RTOL)
        precision = "quantized" if float(rtol) > _FLOAT_RTOL else "fp32"
    precision = "fp32" if precision == "none" else precision
    pruned = any("prun" in str(p.get("name", "")) and p.get("modified") for p in manifest.get("passes") or [])
    return precision + ("+pruned" if pruned else "")


def accuracy_of(info: BundleInfo) -> tuple[float | None, str]:
    """(accuracy in points 0..100, what it measures): the sweep's measurement, else the compile report's."""
    if isinstance(info.metrics.get("accuracy"), (int, float)):
        return float(info.metrics["accuracy"]), info.metrics.get("accuracy_metric", "accuracy (%)")
    section = ((info.manifest or {}).get("report") or {}).get("accuracy")
    score = section.get("score") if isinstance(section, dict) else None
    if isinstance(score, (int, float)) and not isinstance(score, bool):  # the compile's accuracy guard wrote it
        return float(score), str(section.get("metric") or "accuracy (compile report)")
    return None, ""


def _info(bundle_id: str, manifest: dict | None, doc_bundle: dict, sweep: dict | None) -> BundleInfo:
    manifest = manifest or {}
    report = manifest.get("report") or {}
    name = manifest.get("name") or doc_bundle.get("name") or bundle_id[:12]
    fmt = manifest.get("format") or doc_bundle.get("format")
    precision = describe_precision(manifest) if manifest else "?"
    label = (sweep or {}).get("label") or f"{name} {fmt or '?'} {precision}"
    # One module file can hold several models (file.py:factory): the spec and the file's hash name the model.
    src = manifest.get("source") or {}
    source = f"{src.get('path') or name}|{src.get('sha256') or ''}"
    if isinstance((sweep or {}).get("group"), str):  # variants a sweep or the demo compares as one model
        source = f"group|{sweep['group']}"
    return BundleInfo(bundle_id=bundle_id, name=name, label=label, format=fmt,
                      target=(manifest.get("target") or {}).get("name") or doc_bundle.get("target"),
                      precision=precision, model_bytes=(report.get("size") or {}).get("model_bytes"),
                      source=source, manifest=manifest or None, metrics=dict((sweep or {}).get("metrics") or {}))


def _local_manifest(doc: dict, bundle_id: str) -> dict | None:
    """The manifest at the document's bundle path, if that directory (on this machine) holds this bundle."""
    path = (doc.get("bundle") or {}).get("path")
    if not path or not Path(path).is_dir():
        return None
    try:
        bundle = Bundle(path)
    except BundleError:
        return None
    return bundle.manifest if bundle.bundle_id == bundle_id else None


def _bundle_filters(specs: tuple[str, ...]) -> tuple[list[str], dict[str, dict]]:
    """(id prefixes, {bundle_id: manifest}) from --bundle values: bundle directories or id prefixes."""
    prefixes, manifests = [], {}
    for spec in specs:
        if Path(spec).is_dir():
            bundle = Bundle(spec)
            prefixes.append(bundle.bundle_id)
            manifests[bundle.bundle_id] = bundle.manifest
        elif all(c in "0123456789abcdef" for c in spec.lower()) and spec:
            prefixes.append(spec.lower())
        else:
            raise InputError(f"--bundle {spec}: neither a bundle directory nor a bundle id (hex prefix)")
    return prefixes, manifests


def collect(store, bundles: tuple[str, ...] = (), devices: tuple[str, ...] = (), limit: int = 100000) -> ReportData:
    """Runs and bundle facts for a report from a ``ResultsStore``, filtered by bundle and device."""
    prefixes, manifests = _bundle_filters(tuple(bundles))
    rows = store.list(limit=limit)
    rows = [r for r in rows if (not devices or r["device"] in devices)
            and (not prefixes or any(r["bundle_id"].startswith(p) for p in prefixes))]
    live = [r for r in store.live_samples() if not devices or r["device"] in devices]
    rollouts = [r for r in store.rollouts() if not devices or r["device"] in devices]
    if not rows and not live and not rollouts:
        wanted = " ".join([*(f"--bundle {b}" for b in bundles), *(f"--device {d}" for d in devices)])
        raise ResultsError(f"{store.path}: no stored results{' match ' + wanted if wanted else ''}; run "
                           "`edgec sweep`, `edgec bench --results PATH` or `edgec farm bench` first")
    runs, infos = [], {}
    for row in reversed(rows):  # oldest first
        stored = store.get(row["id"])
        doc = stored.get("result")
        status = row["status"]
        error = f"{row['error_type']}: {row['error_message']}" if status == "error" else None
        problem = stored.get("result_problem") or (result_problem(doc) if status == "ok" else None)
        if problem:  # stored before results were checked, or edited since: one bad row is that run's error
            status, error, doc = "error", f"InvalidResult: {problem}", None
        runs.append(Run(row["id"], row["created_at"], row["bundle_id"], row["device"], row["profile"],
                        status, error, doc))
        bundle_id = row["bundle_id"]
        if doc is not None and (bundle_id not in infos or infos[bundle_id].manifest is None):
            manifest = _manifest(doc.get("manifest")) or manifests.get(bundle_id) or _local_manifest(doc, bundle_id)
            infos[bundle_id] = _info(bundle_id, manifest, doc.get("bundle") or {}, _dict(doc.get("sweep")))
        elif bundle_id not in infos:
            infos[bundle_id] = _info(bundle_id, manifests.get(bundle_id), {}, None)
    _unique_labels(infos)
    return ReportData(runs=runs, bundles=infos, results_path=str(store.path), live=live, rollouts=rollouts)


def _dict(value) -> dict | None:
    return value if isinstance(value, dict) else None


def _manifest(value) -> dict | None:
    """A manifest stored inside a result document, when it is one (the document came back from a device)."""
    from edgec.manifest import validate_manifest

    try:
        validate_manifest(value, "stored manifest")
    except BundleError:
        return None
    report = value.get("report")
    return value if report is None or (isinstance(report, dict) and isinstance(report.get("size", {}), dict)) else None


def _unique_labels(infos: dict[str, BundleInfo]) -> None:
    """Bundles that would share a label (two compiles of one variant) get their short id appended."""
    counts: dict[str, int] = {}
    for info in infos.values():
        counts[info.label] = counts.get(info.label, 0) + 1
    for info in infos.values():
        if counts[info.label] > 1:
            info.label = f"{info.label} ({info.bundle_id[:8]})"
