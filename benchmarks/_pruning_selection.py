"""Channel selection by L1 norm vs by removal cost, on nets trained here (test-set accuracy), one run.

The MobileNetV2-style latency benchmark has random weights, so which channels are kept says nothing there. Here
the digits CNN and the tiny depthwise/residual MobileNet are trained on the 8x8 digits (10 epochs, seeded), then
pruned at each ratio twice with the same calibration samples (256 training images), the same sensitivity spread
and the same least-squares refit: once choosing channels by L1 norm, once by removal cost. Accuracy is on the
held-out test digits, whose labels pruning never sees.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

RATIOS = (0.3, 0.5, 0.7)


def _float_ir(module, example: np.ndarray, path: Path):
    import torch

    from edgec.compiler.frontends import lower
    from edgec.compiler.options import CompileOptions
    from edgec.compiler.pipeline import build_float_passes, run_passes
    from edgec.targets import load_profile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.from_numpy(example),), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
    return run_passes(lower(str(path), {}).model, build_float_passes(load_profile("host"), CompileOptions()))[0]


def _accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    from edgec.compiler.pruning.reconstruct import capture

    (logits,) = next(capture(model, [model.graph.outputs[0].name], [[x]], "benchmark"))
    return 100.0 * float(np.mean(logits.argmax(1) == y))


def run_selection(tmp: Path) -> list[dict]:
    """Rows {net, ratio, float, l1, cost} (accuracy %, test digits)."""
    import onnx_ir as ir
    import torch

    from edgec.compiler.passes.prune_filters import PruneFilters
    from edgec.examples.data import digits
    from edgec.examples.torch_models import digits_cnn, tiny_mobilenet, train_classifier

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (x_train, y_train), (x_test, y_test) = digits("nchw")
        batches = [[x_train[i:i + 64]] for i in range(0, 256, 64)]
        nets = {"digits CNN": digits_cnn(), "tiny MobileNet": tiny_mobilenet(10, in_channels=1)}
        rows = []
        for name, module in nets.items():
            base = _float_ir(train_classifier(module, x_train, y_train, epochs=10), x_test[:1],
                             tmp / f"{name.replace(' ', '_')}.onnx")
            proto, float_score = ir.to_proto(base), _accuracy(base, x_test, y_test)
            for ratio in RATIOS:
                row = {"net": name, "ratio": ratio, "float": float_score}
                for selection in ("l1", "cost"):
                    model = ir.from_proto(proto)
                    PruneFilters(ratio, batches=batches, channel_multiple=4, selection=selection)(model)
                    row[selection] = _accuracy(model, x_test, y_test)
                rows.append(row)
        return rows
    finally:
        torch.set_num_threads(threads)


def print_selection(rows: list[dict]) -> None:
    print("Channel selection, trained on digits, sensitivity spread + least squares, test accuracy %")
    print(f"{'net':<16}{'ratio':>6}{'float':>7}{'L1':>7}{'cost':>7}")
    for r in rows:
        print(f"{r['net']:<16}{r['ratio']:>6.1f}{r['float']:>7.1f}{r['l1']:>7.1f}{r['cost']:>7.1f}")
