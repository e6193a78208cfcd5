"""Calibration .npz headers are checked before anything is allocated: per-sample size, labels, member size."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from edgec.compiler.calibration import MAX_ROW_BYTES, load_samples
from edgec.errors import CalibrationDataError

pytestmark = pytest.mark.unit

INPUTS = [{"name": "x", "shape": [None, None], "dtype": "float32"}]


def _npz(path, members: dict) -> None:
    """Members as {name: (declared shape, dtype, payload bytes)}: headers that may lie about the payload."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, (shape, dtype, payload) in members.items():
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                       "shape": shape})
            archive.writestr(f"{name}.npy", buf.getvalue() + payload)


@pytest.mark.parametrize("members, match", [
    ({"x": ((2, MAX_ROW_BYTES // 4 + 1), "float32", b"")}, "bytes per sample"),
    ({"x": ((2, 4), "float32", b"\0" * 32), "labels": ((1 << 30,), "int64", b"")}, "labels"),
    ({"x": ((1 << 20, 4), "float32", b"\0" * 32)}, "truncated"),
])
def test_lying_headers_are_calibration_errors(members, match, tmp_path):
    _npz(tmp_path / "c.npz", members)
    with pytest.raises(CalibrationDataError, match=match):
        load_samples(tmp_path / "c.npz", INPUTS).read(0, 2)


@pytest.mark.parametrize("members, match", [
    ({"x": ((2, MAX_ROW_BYTES // 4 + 1), "float32", b"")}, "bytes per sample"),
    ({"x": ((1 << 20, 4), "float32", b"\0" * 32)}, "truncated"),
])
def test_evaluation_data_of_a_sweep_goes_through_the_same_checks(members, match, tmp_path):
    from edgec.report.evaluate import load_eval

    _npz(tmp_path / "e.npz", members)
    with pytest.raises(CalibrationDataError, match=match):
        load_eval(tmp_path / "e.npz", ["x"])


def test_evaluation_data_reads_at_most_max_samples(tmp_path):
    from edgec.report.evaluate import MAX_SAMPLES, load_eval

    x = np.arange((MAX_SAMPLES + 5) * 2, dtype=np.float32).reshape(-1, 2)
    np.savez(tmp_path / "e.npz", image=x, labels=np.arange(len(x)))
    arrays, labels = load_eval(tmp_path / "e.npz", ["input"])  # one array for a one-input model: any name
    assert arrays[0].shape == (MAX_SAMPLES, 2) and np.array_equal(arrays[0], x[:MAX_SAMPLES])
    assert np.array_equal(labels, np.arange(MAX_SAMPLES))
    with pytest.raises(CalibrationDataError, match=r"no array for input 'a' \(has image\)"):
        load_eval(tmp_path / "e.npz", ["a", "b"])
