"""Calibration and evaluation data: samples for the model's inputs, checked against its io signature.

A ``.npz`` holds one array per model input, named after the input, first axis = samples (an evaluation set adds
``labels``). Arrays are read lazily, one input at a time, and served in batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgec.errors import CalibrationDataError

__all__ = ["CalibrationSet", "load_samples"]


class CalibrationSet:
    """Samples for every model input, in io order; ``labels`` when the data carry them."""

    def __init__(self, source: str, arrays: list[np.ndarray], labels: np.ndarray | None = None):
        self.source = source
        self.arrays = arrays
        self.labels = labels

    def __len__(self) -> int:
        return int(self.arrays[0].shape[0]) if self.arrays else 0

    def batches(self, size: int = 1, limit: int | None = None) -> Iterator[list[np.ndarray]]:
        """Consecutive batches of ``size`` samples (the last may be smaller), at most ``limit`` samples."""
        total = len(self) if limit is None else min(limit, len(self))
        for start in range(0, total, size):
            stop = min(start + size, total)
            yield [a[start:stop] for a in self.arrays]

    def split(self, fraction: float) -> tuple[CalibrationSet, CalibrationSet]:
        """(first part, held-out rest): the rest measures agreement when there are no labelled data."""
        cut = max(1, min(len(self) - 1, round(len(self) * fraction))) if len(self) > 1 else len(self)
        head = CalibrationSet(self.source, [a[:cut] for a in self.arrays],
                              None if self.labels is None else self.labels[:cut])
        tail = CalibrationSet(self.source, [a[cut:] for a in self.arrays],
                              None if self.labels is None else self.labels[cut:])
        return head, tail


def _check_array(source: str, meta: dict, array: np.ndarray) -> np.ndarray:
    name = meta["name"]
    want = meta["shape"]
    if want is not None:
        if array.ndim != len(want):
            raise CalibrationDataError(f"{source}: array {name!r} has shape {list(array.shape)}; the model input "
                                       f"expects {len(want)} dimensions {['N' if d is None else d for d in want]}"
                                       " with samples on the first axis")
        for axis, (got, expect) in enumerate(zip(array.shape[1:], want[1:]), start=1):
            if expect is not None and got != expect:
                raise CalibrationDataError(f"{source}: array {name!r} has shape {list(array.shape)}, expected "
                                           f"{['N' if d is None else d for d in want]} (axis {axis}: {got} != {expect})")
    if np.dtype(meta["dtype"]) != array.dtype:
        if np.issubdtype(array.dtype, np.floating) and np.issubdtype(np.dtype(meta["dtype"]), np.floating):
            return array.astype(meta["dtype"])
        raise CalibrationDataError(f"{source}: array {name!r} has dtype {array.dtype}, the model input expects "
                                   f"{meta['dtype']}")
    return array


def load_samples(path: str | Path, inputs: list[dict], need_labels: bool = False) -> CalibrationSet:
    """Load a ``.npz`` of samples for ``inputs`` (io-signature entries); errors name the array and the fix."""
    path = Path(path)
    if not path.exists():
        raise CalibrationDataError(f"{path}: no such file")
    if path.suffix != ".npz":
        raise CalibrationDataError(f"{path}: expected a .npz with one array per model input "
                                   f"({', '.join(i['name'] for i in inputs)})")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # zipfile/format errors of a corrupt file
        raise CalibrationDataError(f"{path}: not a readable .npz ({type(exc).__name__}: {exc})") from None
    with data:
        names = set(data.files)
        missing = [i["name"] for i in inputs if i["name"] not in names]
        if missing:
            raise CalibrationDataError(f"{path}: no array for model input {missing[0]!r}; arrays present: "
                                       f"{', '.join(sorted(names)) or 'none'}; name arrays after the inputs "
                                       f"({', '.join(i['name'] for i in inputs)})")
        arrays = [_check_array(str(path), meta, data[meta["name"]]) for meta in inputs]
        labels = data["labels"] if "labels" in names else None
    counts = {a.shape[0] for a in arrays}
    if len(counts) > 1:
        raise CalibrationDataError(f"{path}: inputs have different sample counts {sorted(counts)}")
    if not arrays or arrays[0].shape[0] == 0:
        raise CalibrationDataError(f"{path}: holds no samples")
    if need_labels and labels is None:
        raise CalibrationDataError(f"{path}: evaluation data need a 'labels' array")
    if labels is not None and labels.shape[0] != arrays[0].shape[0]:
        raise CalibrationDataError(f"{path}: 'labels' has {labels.shape[0]} entries for {arrays[0].shape[0]} "
                                   "samples")
    return CalibrationSet(str(path), arrays, labels)
