"""Session fixtures for the quantization tests: digits models trained once, saved as torch.export files, with
calibration and labelled evaluation .npz files next to them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgec.examples.data import digits, write_npz


class Trained:
    """A trained digits model on disk with its data files and float accuracy."""

    def __init__(self, model_file: Path, calibration: Path, eval_data: Path, x_test, y_test, float_accuracy: float,
                 model=None):
        self.model = model
        self.model_file, self.calibration, self.eval_data = model_file, calibration, eval_data
        self.x_test, self.y_test, self.float_accuracy = x_test, y_test, float_accuracy


def _train(tmp: Path, factory, layout: str, input_name: str, epochs: int) -> Trained:
    import torch

    from edgec.examples.torch_models import train_classifier

    (x_train, y_train), (x_test, y_test) = digits(layout)
    model = train_classifier(factory(), x_train, y_train, epochs=epochs)
    model_file = tmp / f"{factory.__name__}.pt2"
    torch.export.save(torch.export.export(model, (torch.from_numpy(x_train[:1]),)), model_file)
    with torch.no_grad():
        accuracy = 100.0 * float(np.mean(model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test))
    calibration = write_npz(tmp / f"{factory.__name__}-calib.npz", {input_name: x_train[:256]})
    eval_data = write_npz(tmp / f"{factory.__name__}-eval.npz", {input_name: x_test}, y_test)
    return Trained(model_file, calibration, eval_data, x_test, y_test, accuracy, model)


@pytest.fixture(scope="session")
def digits_cnn_trained(tmp_path_factory) -> Trained:
    from edgec.examples.torch_models import digits_cnn

    return _train(tmp_path_factory.mktemp("quant-cnn"), digits_cnn, "nchw", "x", epochs=8)


@pytest.fixture(scope="session")
def digits_mlp_trained(tmp_path_factory) -> Trained:
    from edgec.examples.torch_models import digits_mlp

    return _train(tmp_path_factory.mktemp("quant-mlp"), digits_mlp, "flat", "input", epochs=10)


def _bundle_accuracy(bundle, x_test, y_test) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    predictions = [int(np.argmax(session.run(None, {name: x[None]})[0])) for x in x_test]
    return 100.0 * float(np.mean(np.array(predictions) == y_test))


@pytest.fixture(scope="session")
def bundle_accuracy():
    """Top-1 accuracy (%) of a bundle's model file run with onnxruntime, one sample at a time."""
    return _bundle_accuracy
