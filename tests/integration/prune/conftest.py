"""Shared, session-scoped models for the pruning tests: a trained digits CNN and a MobileNetV2-style CNN."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from edgec.compiler.frontends import lower
from edgec.compiler.options import CompileOptions
from edgec.compiler.pipeline import build_float_passes, run_passes
from edgec.targets import load_profile


def export(module, example: np.ndarray, path: Path) -> Path:
    """ONNX with a dynamic batch (legacy exporter: one file, quick)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.from_numpy(example),), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
    return path


def float_ir(path: Path):
    """The IR after edgec's float passes, as the compression stage receives it."""
    source = lower(str(path), {})
    return run_passes(source.model, build_float_passes(load_profile("host"), CompileOptions()))[0]


@pytest.fixture(scope="session")
def digits_files(tmp_path_factory):
    """A digits CNN trained here (about 97-99% test accuracy), its calibration and labelled evaluation data."""
    import torch

    from edgec.examples.data import digits, write_npz
    from edgec.examples.torch_models import digits_cnn, train_classifier

    torch.set_num_threads(1)
    torch.manual_seed(0)  # the initial weights: the same trained model whichever tests ran first in this worker
    work = tmp_path_factory.mktemp("digits")
    (x_train, y_train), (x_test, y_test) = digits("nchw")
    model = train_classifier(digits_cnn(), x_train, y_train, epochs=10)
    return {"model": export(model, x_test[:1], work / "digits_cnn.onnx"),
            "calibration": write_npz(work / "calib.npz", {"x": x_train[:256]}),
            "eval": write_npz(work / "eval.npz", {"x": x_test}, labels=y_test),
            "x_train": x_train, "x_test": x_test, "y_test": y_test}


@pytest.fixture(scope="session")
def mobilenet_files(tmp_path_factory):
    """tiny_mobilenet (inverted residuals, depthwise convs, residual adds) at 32x32 with random calibration."""
    from edgec.examples.data import write_npz
    from edgec.examples.torch_models import tiny_mobilenet

    work = tmp_path_factory.mktemp("mobilenet")
    x = np.random.default_rng(0).standard_normal((48, 3, 32, 32)).astype(np.float32)
    return {"model": export(tiny_mobilenet(), x[:1], work / "tiny_mobilenet.onnx"),
            "calibration": write_npz(work / "calib.npz", {"x": x}), "x": x}


@pytest.fixture(scope="session")
def trained_mobilenet(tmp_path_factory):
    """tiny_mobilenet trained on the 8x8 digits (one input channel): a depthwise/residual net with real accuracy."""
    import torch

    from edgec.examples.data import digits
    from edgec.examples.torch_models import tiny_mobilenet, train_classifier

    torch.set_num_threads(1)
    (x_train, y_train), (x_test, y_test) = digits("nchw")
    model = train_classifier(tiny_mobilenet(10, in_channels=1), x_train, y_train, epochs=10)
    path = export(model, x_test[:1], tmp_path_factory.mktemp("mobilenet_digits") / "tiny_mobilenet_digits.onnx")
    return {"model": path, "x_train": x_train, "x_test": x_test, "y_test": y_test}
