"""Fixtures shared by every test folder: example source models, built once per test session (per xdist worker).

Model files live under a session temporary directory; nothing is downloaded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def seed_h5(models_dir) -> Path:
    """The seed's example: tf.keras Input(1) -> Dense(1), adam/mse, fitted, saved as linear_regression_model.h5."""
    from edgec.examples.keras_models import save_linear_regression

    return save_linear_regression(models_dir / "linear_regression_model.h5")


@pytest.fixture(scope="session")
def keras_cnn_file(models_dir) -> Path:
    from edgec.examples.keras_models import keras_cnn

    return keras_cnn(models_dir / "cnn.keras", input_shape=(16, 16, 3))


TINY_MOBILENET = "edgec.examples.torch_models:tiny_mobilenet"
TINY_MOBILENET_SHAPE = {"x": [1, 3, 32, 32]}


@pytest.fixture(scope="session")
def tiny_mobilenet_pt2(models_dir) -> Path:
    """The MobileNetV2-style CNN saved with torch.export (dynamic batch)."""
    import torch

    from edgec.examples.torch_models import tiny_mobilenet

    model = tiny_mobilenet()
    example = (torch.randn(2, 3, 32, 32),)
    program = torch.export.export(model, example, dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    path = models_dir / "tiny_mobilenet.pt2"
    torch.export.save(program, path)
    return path


@pytest.fixture(scope="session")
def tiny_mobilenet_onnx(models_dir) -> Path:
    """The MobileNetV2-style CNN as an ONNX file exported by torch (BatchNorm kept, opset 17)."""
    import torch

    from edgec.examples.torch_models import tiny_mobilenet

    path = models_dir / "tiny_mobilenet.onnx"
    torch.onnx.export(tiny_mobilenet(), (torch.randn(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}},
                      do_constant_folding=False, training=torch.onnx.TrainingMode.PRESERVE)
    return path


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """Run ``edgec ARGV`` in a subprocess: (exit code, stdout, stderr)."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "edgec", *argv], capture_output=True, text=True, timeout=600,
                          cwd=os.getcwd())
    return proc.returncode, proc.stdout, proc.stderr
