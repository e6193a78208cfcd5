"""Files for trying ``edgec sweep`` and ``edgec report``: a trained digits CNN as ONNX, calibration samples and a
labelled evaluation set (scikit-learn's 8x8 digits; nothing is downloaded).

    python -m edgec.examples.digits_files build/digits
    edgec sweep build/digits/digits_cnn.onnx --target rpi4 --calibration build/digits/calib.npz \\
        --eval-data build/digits/eval.npz --variants fp32,int8,int4+onnx,prune30+int8 -o build/digits/sweep.html
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

__all__ = ["write_digits_files"]


def write_digits_files(workdir: str | os.PathLike, epochs: int = 8, seed: int = 0) -> dict[str, Path]:
    """Train the digits CNN and write ``digits_cnn.onnx`` (input ``x`` [1,1,8,8]), ``calib.npz`` (128 training
    samples) and ``eval.npz`` (the held-out samples with ``labels``). Returns their paths by name."""
    import torch

    from edgec.examples.data import digits, write_npz
    from edgec.examples.torch_models import digits_cnn, train_classifier

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (x_train, y_train), (x_test, y_test) = digits("nchw", seed=seed)
    model = train_classifier(digits_cnn(seed), x_train, y_train, epochs=epochs, seed=seed)
    paths = {"model": workdir / "digits_cnn.onnx", "calibration": workdir / "calib.npz",
             "eval": workdir / "eval.npz"}
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but quick and single-file here
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x_test[:1]),), str(paths["model"]), input_names=["x"],
                          output_names=["logits"], dynamo=False)
    write_npz(paths["calibration"], {"x": x_train[:128]})
    write_npz(paths["eval"], {"x": x_test}, labels=y_test)
    return paths


if __name__ == "__main__":
    for name, path in write_digits_files(sys.argv[1] if len(sys.argv) > 1 else "build/digits").items():
        print(f"{name:12} {path}")
