"""Data sets that ship with installed packages (scikit-learn's digits), as arrays and .npz files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["digits", "write_npz"]


def digits(layout: str = "nchw", seed: int = 0, test_fraction: float = 0.3):
    """scikit-learn's 8x8 digits scaled to [0, 1]: ((x_train, y_train), (x_test, y_test)).

    ``layout`` is "nchw" (N,1,8,8), "nhwc" (N,8,8,1) or "flat" (N,64); float32 inputs, int64 labels.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    shapes = {"nchw": (-1, 1, 8, 8), "nhwc": (-1, 8, 8, 1), "flat": (-1, 64)}
    x = x.reshape(shapes[layout])
    cut = int(len(x) * (1 - test_fraction))
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def write_npz(path: str | os.PathLike, arrays: dict, labels=None) -> Path:
    """Write ``arrays`` (input name -> samples) and optional ``labels`` as an .npz calibration/eval file."""
    path = Path(path)
    payload = dict(arrays)
    if labels is not None:
        payload["labels"] = labels
    np.savez(path, **payload)
    return path
