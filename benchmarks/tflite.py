"""edgec's TFLite bundles against float onnxruntime, edgec's ONNX INT8 and plain onnx2tf, in one run.

Models: the MobileNetV2-style CNN (pretrained-style BN statistics; top-1 agreement with float and relative error
on held-out inputs) and the digits CNN trained here on scikit-learn's digits (accuracy on its test split).
Rows, each measured in the same run on this machine:

* float ORT: edgec's float ONNX bundle on onnxruntime (the baseline of every ratio);
* edgec ONNX INT8: ``edgec compile --format onnx --quantize int8`` with the calibration set;
* edgec TFLite fp32 / INT8: ``edgec compile --format tflite`` (``host`` profile), same calibration set;
* plain onnx2tf: ``onnx2tf.convert`` with its defaults on the torch-exported ONNX (its float32 file and its
  full-integer file, calibrated the way onnx2tf does by default: its 20 sample images normalised with ImageNet
  mean/std; here those images are a local seeded stand-in, as onnx2tf's download is not possible offline).
  It runs on a copy in a temporary directory. A model it cannot convert is reported as such.

Latency: single thread, batch 1, median of interleaved runs, as a ratio to float ORT. Size: model file bytes.
Goals: edgec's TFLite fp32 agrees with float ORT on >= 99% of top-1 answers; edgec's TFLite INT8 is no slower
than plain onnx2tf's full-integer file where that one runs; on digits, edgec's TFLite INT8 accuracy is within 2
points of float ORT's.
Run: ``.venv/bin/python -m benchmarks.tflite [--quick]``. Writes build/bench/tflite.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._goals import goal, print_goals

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "build" / "bench" / "tflite.json"
THREADS = 1


class Runner:
    """One model file behind a callable taking IR-layout (NCHW float) batches, plus its size."""

    def __init__(self, name: str, run, path: Path, feed_one):
        self.name, self._run, self.path, self.feed_one = name, run, path, feed_one

    def outputs(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self._run(x[k:k + 1]) for k in range(len(x))])


def _bundle_runner(name: str, bundle_dir: Path) -> Runner:
    from edgec.bundle import Bundle
    from edgec.runtimes import load_runtime, runtime_for_format

    bundle = Bundle(bundle_dir)
    session = load_runtime(runtime_for_format(bundle.format)).load(bundle.model_path, threads=THREADS)
    meta_in, meta_out = bundle.inputs[0], bundle.outputs[0]

    def to_model(x):
        x = x.transpose(meta_in.get("permutation", list(range(x.ndim))))
        quant = meta_in.get("quantization")
        if quant:
            info = np.iinfo(np.dtype(meta_in["dtype"]))
            x = np.clip(np.round(x / quant["scale"] + quant["zero_point"]), info.min, info.max)
        return np.ascontiguousarray(x.astype(meta_in["dtype"]))

    def run(x):
        y = session.run([to_model(x)])[0]
        quant = meta_out.get("quantization")
        return (y.astype(np.float32) - quant["zero_point"]) * quant["scale"] if quant else y

    return Runner(name, run, bundle.model_path, lambda x: (lambda fed=to_model(x): session.run([fed])))


def _tflite_runner(name: str, path: Path) -> Runner:
    from edgec.runtimes import litert

    session = litert.load(path, threads=THREADS)
    detail_in, detail_out = session._interp.get_input_details()[0], session._interp.get_output_details()[0]

    def to_model(x):
        x = x.transpose(0, 2, 3, 1)
        scale, zero = detail_in["quantization"]
        if scale:
            info = np.iinfo(detail_in["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        return np.ascontiguousarray(x.astype(detail_in["dtype"]))

    def run(x):
        y = session.run([to_model(x)])[0]
        scale, zero = detail_out["quantization"]
        return (y.astype(np.float32) - zero) * scale if scale else y

    return Runner(name, run, path, lambda x: (lambda fed=to_model(x): session.run([fed])))


def _onnx2tf_once(onnx_path: Path, work: Path, images_01: np.ndarray, int8: bool) -> Path | str:
    import onnx2tf

    work.mkdir()
    shutil.copy(onnx_path, work / "model.onnx")
    np.save(work / "calibration_image_sample_data_20x128x128x3_float32.npy", images_01)
    saved = os.getcwd()
    os.chdir(work)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            onnx2tf.convert(input_onnx_file_path=str(work / "model.onnx"), output_folder_path=str(work / "out"),
                            output_integer_quantized_tflite=int8, non_verbose=True)
    except (Exception, SystemExit) as exc:  # report, do not crash the benchmark
        errors = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in printed.getvalue().splitlines()
                  if "ERROR" in line]
        return f"failed ({type(exc).__name__}): {errors[0] if errors else str(exc).splitlines()[0]}"
    finally:
        os.chdir(saved)
    return work / "out" / ("model_full_integer_quant.tflite" if int8 else "model_float32.tflite")


def _plain_onnx2tf(onnx_path: Path, work: Path, images_01: np.ndarray) -> dict[str, Path | str]:
    """onnx2tf with its defaults (float32), then with -oiqt (its full-integer file): {variant: file or failure}."""
    return {variant: _onnx2tf_once(onnx_path, work.with_name(f"{work.name}-{variant}"), images_01,
                                   variant == "int8") for variant in ("fp32", "int8")}


def _latency(runners: list[Runner], x: np.ndarray, rounds: int) -> dict[str, float]:
    """Median single-sample latency, runners interleaved so that machine noise hits them all alike."""
    calls = {r.name: r.feed_one(x[:1]) for r in runners}
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    for call in calls.values():
        for _ in range(5):
            call()
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) * 1e3 for name, t in times.items()}


def _quality(reference: np.ndarray, got: np.ndarray, labels) -> dict:
    result = {"rel_error": float(np.linalg.norm(got - reference) / np.linalg.norm(reference)),
              "top1_agreement": float(np.mean(got.argmax(1) == reference.argmax(1)))}
    if labels is not None:
        result["accuracy"] = float(np.mean(got.argmax(1) == labels))
    return result


def _compile(source: str, out: Path, **options) -> Path:
    from edgec import api

    return api.compile(source, out, force=True, target="host", **options).path


def bench_case(name: str, source: str, shape: dict, calib: np.ndarray, test: np.ndarray, labels, tmp: Path,
               onnx_path: Path, rounds: int) -> dict:
    from edgec.examples.data import write_npz

    calib_npz = str(write_npz(tmp / f"{name}-calib.npz", {"x": calib}))
    common = {"input_shapes": shape}
    bundles = {
        "float ORT": _compile(source, tmp / f"{name}-f", format="onnx", quantize="none", **common),
        "edgec ONNX INT8": _compile(source, tmp / f"{name}-oq", format="onnx", quantize="int8",
                                    calibration=calib_npz, **common),
        "edgec TFLite fp32": _compile(source, tmp / f"{name}-tf", format="tflite", quantize="none", **common),
        "edgec TFLite INT8": _compile(source, tmp / f"{name}-tq", format="tflite", quantize="int8",
                                      calibration=calib_npz, **common),
    }
    runners = [_bundle_runner(k, v) for k, v in bundles.items()]
    images_01 = np.random.default_rng(1).random((20, 128, 128, 3), dtype=np.float32)
    plain = _plain_onnx2tf(onnx_path, tmp / f"{name}-plain", images_01)
    notes = []
    for variant, path in plain.items():
        if isinstance(path, str):
            notes.append(f"plain onnx2tf {variant} {path}")
            continue
        try:
            runners.append(_tflite_runner(f"plain onnx2tf {variant}", path))
        except Exception as exc:  # e.g. Flex ops the LiteRT build cannot run
            notes.append(f"plain onnx2tf {variant}: cannot run ({str(exc).splitlines()[0]})")
    reference = runners[0].outputs(test)
    latency = _latency(runners, test, rounds)
    rows = []
    for runner in runners:
        row = {"model": name, "variant": runner.name, "latency_ms": round(latency[runner.name], 4),
               "latency_ratio": round(latency[runner.name] / latency["float ORT"], 3),
               "bytes": runner.path.stat().st_size,
               "size_ratio": round(runner.path.stat().st_size / runners[0].path.stat().st_size, 3)}
        row.update({k: round(v, 5) for k, v in _quality(reference, runner.outputs(test), labels).items()})
        rows.append(row)
    return {"rows": rows, "notes": notes}


def _export_onnx(module, example: np.ndarray, path: Path) -> Path:
    """The ONNX a user would hand to onnx2tf: torch.onnx.export with its defaults and a dynamic batch."""
    import torch

    batch = torch.export.Dim("batch")
    torch.onnx.export(module, (torch.from_numpy(example),), str(path), input_names=["x"],
                      dynamic_shapes={"x": {0: batch}}, external_data=False)
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="benchmarks.tflite")
    parser.add_argument("--quick", action="store_true", help="smaller inputs and fewer runs")
    args = parser.parse_args(argv if argv is not None else [])
    from edgec.examples.data import digits
    from edgec.examples.torch_models import digits_cnn, mobilenet_v2_like, train_classifier

    size, rounds = (96, 30) if args.quick else (160, 100)
    results = {"threads": THREADS, "input_size": size, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="edgec-bench-tflite-") as tmp_name:
        tmp = Path(tmp_name)
        images = np.random.default_rng(0).standard_normal((128, 3, size, size)).astype(np.float32)
        onnx_path = _export_onnx(mobilenet_v2_like(), images[:2], tmp / "mobilenet.onnx")
        results["cases"]["MobileNetV2-like"] = bench_case(
            "mobilenet", "edgec.examples.torch_models:mobilenet_v2_like", {"x": [1, 3, size, size]},
            images[:64], images[64:], None, tmp, onnx_path, rounds)
        (xt, yt), (xe, ye) = digits("nchw")
        model = train_classifier(digits_cnn(), xt, yt, epochs=15)
        import torch

        pt2 = tmp / "digits.pt2"
        torch.export.save(torch.export.export(model, (torch.from_numpy(xt[:2]),),
                                              dynamic_shapes={"x": {0: torch.export.Dim("batch")}}), pt2)
        results["cases"]["digits CNN"] = bench_case(
            "digits", str(pt2), {}, xt[:256], xe, ye, tmp, _export_onnx(model, xt[:2], tmp / "digits.onnx"),
            rounds * 5)
    results["goals"] = _goals(results)
    _print(results)
    print_goals(results["goals"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return results


def _goals(results: dict) -> list[dict]:
    goals = []
    for case, data in results["cases"].items():
        rows = {r["variant"]: r for r in data["rows"]}
        fp32, int8 = rows["edgec TFLite fp32"], rows["edgec TFLite INT8"]
        goals.append(goal(f"{case}: edgec TFLite fp32 top-1 agreement with float ORT >= 99%",
                          fp32["top1_agreement"] >= 0.99, f"{fp32['top1_agreement']:.3f}"))
        plain = next((r for name, r in rows.items() if name.startswith("plain onnx2tf") and "int" in name), None)
        if plain is not None:
            goals.append(goal(f"{case}: edgec TFLite INT8 no slower than {plain['variant']}",
                              int8["latency_ms"] <= plain["latency_ms"],
                              f"{int8['latency_ms']:.3f} ms vs {plain['latency_ms']:.3f} ms"))
        if "accuracy" in int8:
            drop = 100 * (rows["float ORT"]["accuracy"] - int8["accuracy"])
            goals.append(goal(f"{case}: edgec TFLite INT8 accuracy within 2 points of float", drop <= 2.0,
                              f"{drop:+.2f} points"))
    return goals


def _print(results: dict) -> None:
    header = f"{'model':18} {'variant':22} {'ms':>8} {'x float':>8} {'bytes':>10} {'x size':>7} {'top1 agr':>8} " \
             f"{'rel err':>8} {'acc':>6}"
    print(f"threads={results['threads']}  MobileNetV2-like input {results['input_size']}x{results['input_size']}")
    print(header)
    for case, data in results["cases"].items():
        for r in data["rows"]:
            acc = f"{100 * r['accuracy']:.2f}" if "accuracy" in r else "-"
            print(f"{case:18} {r['variant']:22} {r['latency_ms']:8.3f} {r['latency_ratio']:8.3f} {r['bytes']:10d} "
                  f"{r['size_ratio']:7.3f} {r['top1_agreement']:8.3f} {r['rel_error']:8.4f} {acc:>6}")
        for note in data["notes"]:
            print(f"{case:18} note: {note}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
