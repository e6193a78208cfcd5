"""The service's ``.npy`` bodies: the fast reader and writer agree with numpy's own, and every body they do not
handle goes to ``np.load`` with the same answer as before."""

from __future__ import annotations

import io

import numpy as np
import pytest

from edgec.device_agent.payload import PayloadError, decode, encode, npy_bytes

pytestmark = pytest.mark.unit

ARRAYS = [np.zeros((1, 1024), np.float32), np.arange(5, dtype=np.int64), np.float32(3).reshape(()),
          np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.zeros((0, 3), np.float16), np.ones((1,) * 7, np.complex64),
          np.array([True, False]), np.arange(12, dtype=">f8").reshape(3, 4), np.arange(6, dtype=np.int8)]


def _saved(array, **kw) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, **kw)
    return buffer.getvalue()


def _meta(array) -> list[dict]:
    return [{"name": "x", "dtype": array.dtype.name if array.dtype.isnative else None, "shape": list(array.shape)}]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype.str}{list(a.shape)}")
def test_plain_bodies_read_as_np_load_reads_them_and_answers_are_np_save_bytes(array):
    body = _saved(array)
    [got] = decode(body, "application/x-npy", _meta(array))
    assert got.dtype == array.dtype and got.shape == array.shape and np.array_equal(got, array)
    assert npy_bytes(array) == body
    payload, kind = encode([array], _meta(array), "application/x-npy", "b" * 64, 0.001)
    assert kind == "application/x-npy" and payload == body


def test_other_layouts_go_through_np_load_with_the_same_result():
    fortran = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    v2 = io.BytesIO()
    np.lib.format.write_array(v2, np.arange(4, dtype=np.float32), version=(2, 0))
    for body, want in ((_saved(fortran), fortran), (v2.getvalue(), np.arange(4, dtype=np.float32)),
                       (_saved(np.arange(3, dtype=np.float32)) + b"trailing", np.arange(3, dtype=np.float32))):
        [got] = decode(body, "application/x-npy", [{"name": "x", "dtype": "float32", "shape": None}])
        assert np.array_equal(got, want) and got.shape == want.shape
    assert np.load(io.BytesIO(npy_bytes(fortran))).flags.c_contiguous  # answers are always C order


def _header(text: str) -> bytes:
    text += " " * (-(len(text) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()


@pytest.mark.parametrize("body, words", [
    (_header("{'descr': '<f4', 'fortran_order': False, 'shape': (" + "1, " * 100 + "), }") + b"\0" * 4,
     "maximum supported dimension"),
    (_header("{'descr': '<f3', 'fortran_order': False, 'shape': (1,), }") + b"\0" * 3, "not a valid dtype"),
    (_header("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }") + b"\0" * 8, "allow_pickle"),
    (_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4), }") + b"\0" * 8, "readable .npy"),
    (b"\x93NUMPY garbage", "readable .npy"),
])
def test_bad_bodies_are_one_400_each(body, words):
    with pytest.raises(PayloadError) as err:
        decode(body, "application/x-npy", [{"name": "x", "dtype": "float32", "shape": None}])
    assert err.value.status == 400 and words in str(err.value)
