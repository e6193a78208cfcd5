"""edgec on the real-model corpus, beside the best peer for each model, in one run.

For every corpus model (``edgec.examples.corpus``: models that fer, facenet-pytorch, rapidocr, silero-vad and
ddddocr ship) and target (``host``: ONNX, quantized for the machine this runs on; ``rpi4``: TFLite or the ONNX
fallback): compile time, format, size ratio against the source file, fidelity against the source on real
inputs (the model's own metric and the first output's cosine, see ``corpus_metrics``) and latency as a ratio
to fp32 onnxruntime on the float model, all measured here (rpi4 bundles run on this CPU: their ratios say
nothing about the Pi, their fidelity does). Peers, on the same float ONNX and calibration data:
onnxruntime ``quantize_static`` (QDQ, per-channel; MinMax, Entropy and Percentile ranges, the best of the three
shown), onnx2tf (fp32 and -oiqt int8), TFLiteConverter from the Keras model (fer), and fer's own int8 ``.tflite``.

Goals: every corpus model compiles fp32 and int8 for both targets, and edgec's host int8 keeps the source's
decisions at least as well as the best int8 peer for that model (its metric; the cosine is shown beside it).

Run: ``.venv/bin/python -m benchmarks.zoo [--quick] [--models a,b]``. Writes build/bench/zoo.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "build" / "bench" / "zoo.json"
CALIBRATION, EVALUATION = 32, 24
VAD_CHUNKS = 150  # 4.8 s of speech-like audio, streamed chunk by chunk


class Variant:
    """One runnable build of a model: its runner, its file, how long it took to build, its format."""

    def __init__(self, name: str, run, path: Path, fmt: str, seconds: float | None = None, note: str = ""):
        self.name, self.run, self.path, self.format, self.seconds, self.note = name, run, path, fmt, seconds, note


def cpu_flags() -> str:
    from edgec.targets.host import read_cpu_flags

    model, features = read_cpu_flags()
    return f"{model}; {' '.join(sorted(features))}"


def _edgec(model, target: str, precision: str, out: Path, calibration: Path) -> Variant:
    from edgec import api
    from edgec.examples.corpus_metrics import bundle_runner

    options = {"target": target, "quantize": precision, "input_shapes": {k: list(v) for k, v in model.shapes.items()}}
    if precision != "none":
        options["calibration"] = str(calibration)
    start = time.perf_counter()
    bundle = api.compile(model.source, out, force=True, **options)
    seconds = time.perf_counter() - start
    label = f"edgec {target} {'int8' if precision != 'none' else 'fp32'}"
    return Variant(label, bundle_runner(bundle), bundle.model_path, bundle.format, seconds)


def _float_onnx(model, host_fp32: Variant | None, tmp: Path) -> Path | None:
    """The float ONNX the baseline and the peers start from: the package's own file, torch.onnx.export's for
    the MTCNN nets (what a user would hand to a converter), edgec's float export of the Keras model."""
    if model.path.suffix == ".onnx":
        return model.path
    if model.factory:
        import importlib

        import torch

        module, name = model.factory.split(":")
        net = getattr(importlib.import_module(module), name)()
        example = tuple(torch.zeros(shape) for shape in model.shapes.values())
        path = tmp / "torch-export.onnx"
        torch.onnx.export(net, example, str(path), input_names=list(model.shapes), external_data=False)
        return path
    return host_fp32.path if host_fp32 else None


class _Reader:
    def __init__(self, model, samples: dict):
        count = len(next(iter(samples.values())))
        self._feeds = iter([model.feed(samples, k) for k in range(count)])

    def get_next(self):
        return next(self._feeds, None)


ORT_METHODS = ("MinMax", "Entropy", "Percentile")
ORT = "ORT per-channel"  # onnxruntime quantize_static, QDQ


def _ort_static(model, float_onnx: Path, samples: dict, out: Path, method: str) -> Variant:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    from edgec.examples.corpus_metrics import onnx_runner

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # its calibrators print per-tensor progress
        quantize_static(str(float_onnx), str(out), _Reader(model, samples), quant_format=QuantFormat.QDQ,
                        per_channel=True, calibrate_method=getattr(CalibrationMethod, method))
    return Variant(f"{ORT} {method}", onnx_runner(out), out, "onnx", time.perf_counter() - start)


def onnx2tf_variant(float_onnx: Path, work: Path, calib: dict, int8: bool) -> Variant:
    """Plain onnx2tf on ``float_onnx`` (int8: its full-integer file with float io, calibrated on ``calib``,
    NCHW arrays by input name); quant_real uses it too."""
    import onnx2tf

    from edgec.examples.corpus_metrics import tflite_runner

    work.mkdir(parents=True)
    shutil.copy(float_onnx, work / "model.onnx")  # onnx2tf overwrites its input
    # onnx2tf downloads a calibration sample for 3-channel images unless the file is there (TOOLCHAIN.md).
    images = np.random.default_rng(1).random((20, 128, 128, 3), dtype=np.float32)
    np.save(work / "calibration_image_sample_data_20x128x128x3_float32.npy", images)
    custom = []  # int8 is calibrated on the same real samples as edgec (NHWC for 4-D inputs)
    for k, (name, array) in enumerate(calib.items()):
        np.save(work / f"calib{k}.npy", array.transpose(0, 2, 3, 1) if array.ndim == 4 else array)
        custom.append([name, f"calib{k}.npy", 0.0, 1.0])
    saved, printed = os.getcwd(), io.StringIO()
    start = time.perf_counter()
    os.chdir(work)
    try:
        with contextlib.redirect_stdout(printed):
            onnx2tf.convert(input_onnx_file_path="model.onnx", output_folder_path="out", non_verbose=True,
                            output_integer_quantized_tflite=int8,
                            custom_input_op_name_np_data_path=custom if int8 else None)
    except (Exception, SystemExit) as exc:
        errors = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in printed.getvalue().splitlines()
                  if "ERROR" in line and "trace log" not in line]
        raise RuntimeError(errors[0] if errors else str(exc).splitlines()[0][:160]) from None
    finally:
        os.chdir(saved)
    path = work / "out" / ("model_integer_quant.tflite" if int8 else "model_float32.tflite")
    name = "onnx2tf " + ("int8 (float io)" if int8 else "fp32")
    return Variant(name, _nhwc(tflite_runner(path)), path, "tflite", time.perf_counter() - start)


def _nhwc(run):
    """onnx2tf writes NHWC inputs and outputs for 4-D tensors: feed and read in the source's NCHW."""
    def nhwc(feeds: dict) -> dict:
        return {k: np.ascontiguousarray(v.transpose(0, 2, 3, 1)) if v.ndim == 4 else v for k, v in feeds.items()}

    def wrapped(feeds: dict) -> list:
        return [o.transpose(0, 3, 1, 2) if o.ndim == 4 else o for o in run(nhwc(feeds))]

    wrapped.prepare = lambda feeds: run.prepare(nhwc(feeds))
    return wrapped


def _keras_tflite(model, samples: dict, out: Path) -> Variant:
    import tensorflow as tf
    import tf_keras

    from edgec.examples.corpus_metrics import tflite_runner

    start = time.perf_counter()
    keras_model = tf_keras.models.load_model(str(model.path), compile=False)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    data = next(iter(samples.values()))
    converter.representative_dataset = lambda: ([data[i:i + 1]] for i in range(len(data)))
    out.write_bytes(converter.convert())
    return Variant("TFLiteConverter int8 (float io)", tflite_runner(out), out, "tflite", time.perf_counter() - start)


def _runs(variant: Variant, feed: dict, notes: list[str]) -> bool:
    try:
        variant.run(feed)
        return True
    except Exception as exc:
        notes.append(f"{variant.name}: cannot run: {str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}")
        return False


def _latencies(variants: list[Variant], feed: dict, rounds: int) -> dict[str, float]:
    """Median single-sample latency of the model call alone (inputs already in its layout: ``timed``), variants
    interleaved so that machine noise hits them all alike."""
    from edgec.examples.corpus_metrics import timed

    calls = {v.name: timed(v.run, feed) for v in variants}
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for call in calls.values():
        for _ in range(3):
            call()
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) * 1e3 for name, t in times.items()}


def _peers(model, float_onnx: Path, calib: dict, tmp: Path) -> tuple[list[Variant], list[str]]:
    from edgec.examples.corpus import package_file
    from edgec.examples.corpus_metrics import tflite_runner

    makers = {f"{ORT} {m}": (lambda m=m: _ort_static(model, float_onnx, calib, tmp / f"ort-{m}.onnx", m))
              for m in ORT_METHODS}
    makers.update({"onnx2tf fp32": lambda: onnx2tf_variant(float_onnx, tmp / "o2tf-fp32", calib, False),
              "onnx2tf int8": lambda: onnx2tf_variant(float_onnx, tmp / "o2tf-int8", calib, True)})
    if model.path.suffix in (".h5", ".hdf5"):
        makers["TFLiteConverter int8"] = lambda: _keras_tflite(model, calib, tmp / "keras-int8.tflite")
    if model.peer_tflite:
        path = package_file(model.distribution, model.peer_tflite)
        makers[f"{model.distribution}'s own int8 .tflite"] = lambda: Variant(
            f"{model.distribution}'s own int8 .tflite", tflite_runner(path), path, "tflite")
    peers, notes = [], []
    for name, make in makers.items():
        if model.prequantized and (name.startswith(ORT) or "int8" in name):  # it would quantize twice
            notes.append(f"{name}: not run (the model is already quantized)")
            continue
        try:
            peers.append(make())
        except Exception as exc:  # a peer that cannot take the model is a row note, not a crash
            notes.append(f"{name}: failed: {str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}")
    return peers, notes


def bench_model(model, tmp: Path, rounds: int, targets=("host", "rpi4")) -> dict:
    from edgec.examples.corpus import write_calibration
    from edgec.examples.corpus_metrics import fidelity, onnx_runner, source_runner

    calibration = write_calibration(model, tmp / "calibration.npz", n=CALIBRATION, seed=0)
    calib = model.samples(CALIBRATION, 0)
    test = model.samples(VAD_CHUNKS if model.metric == "vad" else EVALUATION, 1)
    variants, notes = [], []
    for target in targets:
        for precision in ("none", "int8"):
            try:
                variants.append(_edgec(model, target, precision, tmp / f"{target}-{precision}", calibration))
            except Exception as exc:
                notes.append(f"edgec {target} {precision}: failed: {str(exc).splitlines()[0][:200]}")
    host_fp32 = next((v for v in variants if v.name == "edgec host fp32"), None)
    float_onnx = _float_onnx(model, host_fp32, tmp)
    baseline = Variant("fp32 onnxruntime", onnx_runner(float_onnx), float_onnx, "onnx") if float_onnx else None
    peers, peer_notes = _peers(model, float_onnx, calib, tmp) if float_onnx else ([], [])
    feed = model.feed(test, 0)
    peers = [v for v in peers if _runs(v, feed, notes)]  # a peer's file its runtime cannot run is a note, not a crash
    everything = ([baseline] if baseline else []) + variants + peers
    latency = _latencies(everything, feed, rounds)
    source, size = source_runner(model), model.path.stat().st_size
    rows = []
    for v in everything:
        row = {"model": model.name, "variant": v.name, "format": v.format,
               "compile_s": None if v.seconds is None else round(v.seconds, 1),
               "size_ratio": round(v.path.stat().st_size / size, 3),
               "latency_ms": round(latency[v.name], 3),
               "latency_ratio": round(latency[v.name] / latency[baseline.name], 3) if baseline else None}
        try:
            row.update({k: round(s, 4) for k, s in fidelity(model, source, v.run, test).items()})
        except Exception as exc:
            row["error"] = str(exc).splitlines()[0][:160]
        rows.append(row)
    return {"rows": _best_ort(rows), "notes": notes + peer_notes}


def _score(row: dict) -> tuple[float, float]:
    """(the model's metric, cosine) of a row: higher is better; a row that could not be measured scores -1."""
    metric = next((v for k, v in row.items() if k in METRIC_KEYS), -1.0)
    return metric, row.get("cosine", -1.0)


def _best_ort(rows: list[dict]) -> list[dict]:
    """onnxruntime's three range methods collapse into the best one's row (the others stay in ``alternatives``)."""
    ort = [r for r in rows if r["variant"].startswith(ORT)]
    if not ort:
        return rows
    best = max(ort, key=_score)
    best = {**best, "variant": f"{best['variant']} (best of {len(ort)})",
            "alternatives": [r for r in ort if r is not best]}
    out, placed = [], False
    for r in rows:
        if r["variant"].startswith(ORT):
            if not placed:
                out.append(best)
                placed = True
            continue
        out.append(r)
    return out


def goals(results: list[dict], names: list[str]) -> list[dict]:
    """Every model compiles for both targets at both precisions; edgec host int8 at or above the best int8 peer;
    edgec rpi4 int8 at or above the best TFLite int8 peer."""
    from benchmarks._goals import goal

    found = {r["model"] for result in results for r in result["rows"]}
    missing = [f"{n}: benchmark failed" for n in names if n not in found]
    for result in results:
        edgec = {r["variant"] for r in result["rows"] if "error" not in r}
        model = result["rows"][0]["model"]
        missing += [f"{model}: {label}" for label in (f"edgec {t} {p}" for t in ("host", "rpi4") for p in ("fp32", "int8"))
                    if label not in edgec]
    records = [goal("every corpus model compiles fp32 and int8 for host and rpi4", not missing,
                    "; ".join(missing) or f"{len(found)} models x 4 bundles")]
    for result in results:
        rows = result["rows"]
        records += _tflite_goal(rows)
        mine = next((r for r in rows if r["variant"] == "edgec host int8"), None)
        peers = [r for r in rows if not r["variant"].startswith("edgec") and "error" not in r
                 and (r["variant"].startswith(ORT) or "int8" in r["variant"])]
        if mine is None or not peers or rows[0]["model"] == "ddddocr-old":
            continue  # nothing to compare (ddddocr-old is already quantized: no peer quantizes it again)
        best = max(peers, key=_score)
        metric = next((k for k in mine if k in METRIC_KEYS), None)
        if metric is None or metric not in best:
            records.append(goal(f"{mine['model']}: edgec host int8 measured", False, mine.get("error", "no metric")))
            continue
        records.append(_versus(f"{mine['model']}: edgec host int8 at or above the best int8 peer", mine, best,
                               metric))
    return records


def _versus(name: str, mine: dict, best: dict, metric: str) -> dict:
    """The goal record ``name``: ``mine`` at or above ``best`` on ``metric``, both figures and cosines shown."""
    from benchmarks._goals import goal

    return goal(name, mine[metric] >= best[metric], f"{METRIC_KEYS[metric]} {mine[metric]:.3f} cosine "
                f"{mine['cosine']:.4f} vs {best[metric]:.3f} / {best['cosine']:.4f} ({best['variant']})")


def _tflite_goal(rows: list[dict]) -> list[dict]:
    """edgec's rpi4 int8 bundle (TFLite, or ONNX where TFLite cannot hold the budget) at or above the best int8
    TFLite peer (onnx2tf, TFLiteConverter, a package's own file) on the model's metric."""
    mine = next((r for r in rows if r["variant"] == "edgec rpi4 int8" and "error" not in r), None)
    peers = [r for r in rows if not r["variant"].startswith("edgec") and "error" not in r
             and r.get("format") == "tflite" and "int8" in r["variant"]]
    metric = next((k for k in mine if k in METRIC_KEYS), None) if mine else None
    if mine is None or not peers or metric is None:
        return []
    best = max(peers, key=_score)
    if metric not in best:
        return []
    return [_versus(f"{mine['model']}: edgec rpi4 int8 ({mine.get('format')}) at or above the best TFLite int8 peer",
                    mine, best, metric)]


def print_table(results: list[dict]) -> None:
    header = (f"{'model':<12} {'variant':<38} {'fmt':<6} {'compile':>7} {'size':>6} {'latency':>8} "
              f"{'metric':>16} {'cosine':>7}")
    print(header)
    print("-" * len(header))
    for result in results:
        for r in result["rows"]:
            metric = next(((k, v) for k, v in r.items() if k in METRIC_KEYS), None)
            shown = f"{METRIC_KEYS[metric[0]]} {metric[1]:.3f}" if metric else "error"
            compile_s = "-" if r["compile_s"] is None else f"{r['compile_s']:.1f}s"
            latency = "-" if r["latency_ratio"] is None else f"{r['latency_ratio']:.2f}x"
            print(f"{r['model']:<12} {r['variant'][:38]:<38} {r['format']:<6} {compile_s:>7} {r['size_ratio']:>5.2f}x "
                  f"{latency:>8} {shown:>16} {r.get('cosine', float('nan')):>7.4f}")
        for note in result["notes"] + [f"{r['variant']}: cannot run: {r['error']}" for r in result["rows"]
                                       if "error" in r]:
            print(f"    note: {note}")


METRIC_KEYS = {"top1_agreement": "top-1", "mean_iou": "map IoU", "char_agreement": "chars", "speech_agreement": "speech",
               "anchor_iou": "anchors", "step_agreement": "steps"}


def main(argv=None) -> dict:
    from benchmarks._goals import machine, print_goals
    from edgec.examples.corpus import CORPUS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer latency rounds (a smoke run)")
    parser.add_argument("--models", help="comma-separated corpus names (default: all)")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    names = args.models.split(",") if args.models else list(CORPUS)
    print(machine(), flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="edgec-bench-zoo-") as tmp:
        for name in names:
            work = Path(tmp) / name
            work.mkdir()
            try:
                results.append(bench_model(CORPUS[name], work, rounds=10 if args.quick else 50))
            except Exception as exc:  # one model's crash must not hide the others' rows
                print(f"{name}: benchmark failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                continue
            print_table(results[-1:])
            OUT.parent.mkdir(parents=True, exist_ok=True)  # after every model: a long run keeps what it did
            OUT.write_text(json.dumps({"cpu": cpu_flags(), "results": results}, indent=1, sort_keys=True))
    print()
    print_table(results)
    records = goals(results, names)
    print_goals(records)
    return {"goals": records}


if __name__ == "__main__":
    main()
