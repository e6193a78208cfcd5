"""Filter pruning on the 224x224 MobileNetV2-style CNN: FLOPs, parameters, size and latency vs unpruned, one run.

Four bundles are compiled by ``edgec.api.compile`` from the same ONNX export and the same calibration images
(random images: the model has random weights with pretrained-style BN statistics, so "accuracy" is top-1
agreement with the float model on held-out samples): fp32, pruned fp32, int8 (edgec's quantization stage) and
pruned + int8, plus "uniform": the same ratio in every group without sensitivity or reconstruction (this model's
output barely depends on its input, so its sensitivities are noise; the uniform row shows the speed-up does not
hinge on the allocation). A second table compares channel selection by L1 norm and by removal cost on nets trained
here (``benchmarks._pruning_selection``). Latency is the median of single-thread onnxruntime runs, variants interleaved round by round so
machine load hits all of them alike; every figure is a ratio to the unpruned variant of the same precision.

Run: ``.venv/bin/python -m benchmarks.pruning [--ratio 0.3] [--rounds 7]``. Writes build/bench/pruning.json.
``--imagenet [--recover-time 300] [--targets 0.15,0.30]``: EfficientNet-Lite2 with its published weights on real
photo crops, edgec with and without recovery against Torch-Pruning (``benchmarks._pruning_imagenet``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks._goals import goal, print_goals
from benchmarks._pruning_selection import print_selection, run_selection

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "build" / "bench" / "pruning.json"
THREADS = 1


def _export(tmp: Path) -> Path:
    import torch

    from edgec.examples.torch_models import mobilenet_v2_like

    path = tmp / "mobilenet_v2_like.onnx"
    example = torch.zeros(1, 3, 224, 224)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(mobilenet_v2_like(), (example,), str(path), input_names=["x"], output_names=["y"],
                          dynamo=False)
    return path


def _compile(source: Path, tmp: Path, name: str, calibration: Path, **options) -> dict:
    from edgec import api

    start = time.perf_counter()
    bundle = api.compile(str(source), tmp / name, target="host", format="onnx", calibration=str(calibration),
                         max_accuracy_drop=5.0, **options)
    report = bundle.manifest["report"]
    return {"name": name, "path": bundle.model_path, "compile_s": time.perf_counter() - start,
            "bytes": bundle.model_path.stat().st_size, "compression": report.get("compression", {}),
            "quantization": report.get("quantization", {}), "accuracy": report.get("accuracy", {})}


def _uniform(fp32: dict, ratio: float, tmp: Path) -> dict:
    """The same ratio in every group (no sensitivity, no reconstruction): speed does not hinge on the allocation."""
    import onnx

    from edgec import ir as edgec_ir
    from edgec.compiler.passes.prune_filters import PruneFilters

    model = edgec_ir.from_proto(onnx.load(str(fp32["path"])))
    PruneFilters(ratio, reconstruct=False, sensitivity=False, channel_multiple=8, residual=True)(model)
    path = tmp / "uniform.onnx"
    edgec_ir.save(model, path)
    return {"name": f"uniform{int(ratio * 100)}", "path": path, "compile_s": 0.0, "bytes": path.stat().st_size,
            "compression": {}, "quantization": {}, "accuracy": {}}


def _stats(path: Path) -> tuple[float, int]:
    import onnx

    from edgec.targets.model_stats import analyse

    proto = onnx.load(str(path))
    flops = sum(node.flops for node in analyse(proto).nodes)
    params = sum(int(np.prod(t.dims)) for t in proto.graph.initializer if len(t.dims) > 1)
    return flops, params


def _latencies(paths: dict, x: np.ndarray, rounds: int, block: int = 10, name: str = "x") -> dict:
    import onnxruntime as ort

    sessions = {}
    for name, path in paths.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = THREADS
        sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(3):
            sessions[name].run(None, {sessions[name].get_inputs()[0].name: x})
    samples: dict = {name: [] for name in paths}
    for _ in range(rounds):
        for name, session in sessions.items():
            feed = {session.get_inputs()[0].name: x}
            start = time.perf_counter()
            for _ in range(block):
                session.run(None, feed)
            samples[name].append((time.perf_counter() - start) / block * 1000)
    return {name: float(np.median(v)) for name, v in samples.items()}


def run(ratio: float, rounds: int) -> dict:
    from edgec.examples.data import write_npz

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        source = _export(tmp)
        images = np.random.default_rng(0).standard_normal((32, 3, 224, 224)).astype(np.float32)
        calibration = write_npz(tmp / "calib.npz", {"x": images})
        # no recovery: this model's weights are random, there is nothing to distill towards that matters here
        variants = [_compile(source, tmp, "fp32", calibration, quantize="none"),
                    _compile(source, tmp, f"pruned{int(ratio * 100)}", calibration, quantize="none", prune=ratio,
                             recover_time=0),
                    _compile(source, tmp, "int8", calibration, quantize="int8"),
                    _compile(source, tmp, f"pruned{int(ratio * 100)}+int8", calibration, quantize="int8",
                             prune=ratio, recover_time=0)]
        variants.insert(2, _uniform(variants[0], ratio, tmp))
        latency = _latencies({v["name"]: v["path"] for v in variants}, images[:1], rounds)
        rows = []
        for index, variant in enumerate(variants):
            base = variants[0 if index < 3 else 3]
            flops, params = _stats(variant["path"])
            base_flops, base_params = _stats(base["path"])
            accuracy = variant["compression"].get("accuracy") or variant["accuracy"]
            rows.append({"variant": variant["name"], "flops": flops, "params": params, "bytes": variant["bytes"],
                         "latency_ms": latency[variant["name"]], "flops_ratio": flops / base_flops,
                         "params_ratio": params / base_params, "size_ratio": variant["bytes"] / base["bytes"],
                         "speedup": latency[base["name"]] / latency[variant["name"]],
                         "agreement": accuracy.get("agreement"), "rel_error": accuracy.get("rel_error"),
                         "compile_s": round(variant["compile_s"], 1)})
        selection = run_selection(tmp)
    return {"model": "mobilenet_v2_like 1x3x224x224", "ratio": ratio, "threads": THREADS, "rows": rows,
            "selection": selection,
            "int8": "edgec.compiler.stages.quantize (issue 3) through edgec.api.compile",
            "goal": f"{ratio:g} pruning gives >= 1.3x lower latency"}


def _print(result: dict) -> None:
    print(f"{result['model']}, prune {result['ratio']:g}, {result['threads']} thread(s); ratios vs the unpruned "
          "variant of the same precision")
    header = f"{'variant':<14}{'GFLOPs':>8}{'params':>10}{'MB':>7}{'ms':>8}{'FLOPs':>7}{'params':>8}{'size':>7}" \
             f"{'speed':>7}{'agree%':>8}"
    print(header)
    for r in result["rows"]:
        agreement = "-" if r["agreement"] is None else f"{r['agreement']:.1f}"
        print(f"{r['variant']:<14}{r['flops'] / 1e9:>8.3f}{r['params']:>10}{r['bytes'] / 1e6:>7.2f}"
              f"{r['latency_ms']:>8.2f}{r['flops_ratio']:>7.2f}{r['params_ratio']:>8.2f}{r['size_ratio']:>7.2f}"
              f"{r['speedup']:>6.2f}x{agreement:>8}")
    print_selection(result["selection"])
    print_goals(result["goals"])


def _goals(result: dict) -> list[dict]:
    pruned = [r for r in result["rows"] if r["variant"].startswith(("pruned", "uniform"))]
    goals = [goal(f"{r['variant']}: {result['goal']}", r["speedup"] >= 1.3, f"{r['speedup']:.2f}x") for r in pruned]
    for net in dict.fromkeys(r["net"] for r in result["selection"]):
        rows = [r for r in result["selection"] if r["net"] == net]
        l1, cost = (float(np.mean([r[k] for r in rows])) for k in ("l1", "cost"))
        goals.append(goal(f"{net}: removal-cost selection keeps at least L1's accuracy (mean over ratios)",
                          cost >= l1, f"{cost:.1f}% vs {l1:.1f}%"))
    return goals


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="benchmarks.pruning", description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--imagenet", action="store_true", help="EfficientNet-Lite2 on photo crops, with peers")
    parser.add_argument("--recover-time", type=float, default=300.0, help="seconds of recovery per pruned model")
    parser.add_argument("--targets", default="0.15,0.30", help="parameter reductions to reach")
    args = parser.parse_args(argv if argv is not None else [])
    if args.imagenet:
        from benchmarks._pruning_imagenet import goals, print_result, run_imagenet

        result = run_imagenet([float(t) for t in args.targets.split(",")], args.recover_time, args.rounds)
        result["goals"] = goals(result)
        print_result(result)
        print_goals(result["goals"])
        out = OUT.with_name(f"pruning_imagenet_{args.targets.replace(',', '_')}.json")
    else:
        result = run(args.ratio, args.rounds)
        result["goals"] = _goals(result)
        _print(result)
        out = OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    return result


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
