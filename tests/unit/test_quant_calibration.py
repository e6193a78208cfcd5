"""Calibration data: .npz (streamed), image directories with --preprocess, file.py:function; bad input."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.compiler.calibration import CalibrationSet, load_samples, parse_preprocess, warn_if_few
from edgec.errors import CalibrationDataError, UsageError

pytestmark = pytest.mark.unit

INPUTS = [{"name": "x", "shape": [None, 1, 8, 8], "dtype": "float32"}]


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_npz_rows_are_read_on_demand_and_match_the_file(tmp_path):
    data = np.random.default_rng(0).standard_normal((50, 1, 8, 8)).astype(np.float32)
    samples = load_samples(_npz(tmp_path / "c.npz", x=data, labels=np.arange(50)), INPUTS)
    assert len(samples) == 50 and samples.labels.tolist() == list(range(50))
    np.testing.assert_array_equal(samples.read(7, 9)[0], data[7:9])
    batches = list(samples.batches(16, limit=40))
    assert [len(b[0]) for b in batches] == [16, 16, 8]
    part, rest = samples.random_split(0.5, seed=3)
    assert len(part) == len(rest) == 25
    assert sorted(part.labels.tolist() + rest.labels.tolist()) == list(range(50))
    assert part.labels.tolist() != list(range(25))  # not the first half in file order
    first = int(rest.labels[0])
    np.testing.assert_array_equal(rest.read(0, 1)[0], data[first:first + 1])
    assert samples.random_split(0.5, seed=3)[0].labels.tolist() == part.labels.tolist()  # seeded


def test_float64_samples_are_cast_to_the_input_dtype(tmp_path):
    samples = load_samples(_npz(tmp_path / "c.npz", x=np.zeros((4, 1, 8, 8))), INPUTS)
    assert samples.read(0, 4)[0].dtype == np.float32


@pytest.mark.parametrize("arrays, words", [
    ({"y": np.zeros((4, 1, 8, 8), np.float32), "z": np.zeros((4, 1, 8, 8), np.float32)},
     ["no array for model input 'x'", "arrays present: y, z"]),
    ({"x": np.zeros((4, 1, 9, 8), np.float32)}, ["'x' has shape [4, 1, 9, 8]", "expected ['N', 1, 8, 8]",
                                                  "axis 2: 9 != 8"]),
    ({"x": np.zeros((4, 8, 8), np.float32)}, ["'x' has shape [4, 8, 8]", "expects 4 dimensions"]),
    ({"x": np.zeros((4, 1, 8, 8), np.int32)}, ["'x' has dtype int32", "expects float32"]),
    ({"x": np.zeros((0, 1, 8, 8), np.float32)}, ["holds no samples"]),
    ({"x": np.zeros((4, 1, 8, 8), np.float32), "labels": np.zeros(3, np.int64)},
     ["'labels' has 3 entries for 4 samples"]),
])
def test_bad_npz_names_what_is_wrong(tmp_path, arrays, words):
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CalibrationDataError) as caught:
        load_samples(path, INPUTS)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message


def test_one_array_feeds_a_one_input_model_whatever_its_name(tmp_path):
    samples = load_samples(_npz(tmp_path / "c.npz", images=np.ones((3, 1, 8, 8), np.float32)), INPUTS)
    assert len(samples) == 3 and samples.read(0, 1)[0].shape == (1, 1, 8, 8)


def test_too_few_samples_warns_with_the_number():
    samples = CalibrationSet("calib.npz", [np.zeros((5, 1, 8, 8), np.float32)])
    with pytest.warns(UserWarning, match="only 5 calibration samples; entropy calibration wants at least 32"):
        assert warn_if_few(samples, "entropy")
    assert warn_if_few(CalibrationSet("c", [np.zeros((40, 1), np.float32)]), "entropy") is None


def test_image_directory_is_preprocessed_and_streamed(tmp_path):
    from PIL import Image

    for k in range(3):
        pixels = np.full((12, 10, 3), 40 * k, np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"img{k}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    inputs = [{"name": "image", "shape": [None, 3, 8, 8], "dtype": "float32"}]
    samples = load_samples(tmp_path, inputs, preprocess="resize=8,mean=0.5:0.5:0.5,std=0.5:0.5:0.5,layout=nchw")
    assert len(samples) == 3
    batch = samples.read(1, 3)[0]
    assert batch.shape == (2, 3, 8, 8) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0], (40 / 255 - 0.5) / 0.5, rtol=1e-5)
    with pytest.raises(CalibrationDataError, match=r"shape \[1, 8, 8, 3\].*axis 1: 8 != 3"):
        load_samples(tmp_path, inputs, preprocess="resize=8,layout=nhwc")


def test_preprocess_spec_errors_are_usage_errors():
    assert parse_preprocess("resize=224x200,mean=0.1:0.2:0.3")["resize"] == [224, 200]
    with pytest.raises(UsageError, match="cannot read 'colour=red'"):
        parse_preprocess("resize=8,colour=red")


def test_python_function_source_is_called_per_pass(tmp_path):
    source = tmp_path / "data.py"
    source.write_text("import numpy as np\n"
                      "def samples():\n"
                      "    for k in range(6):\n"
                      "        yield {'x': np.full((1, 8, 8), k, np.float32)}\n"
                      "def broken():\n"
                      "    yield {'y': 1}\n")
    samples = load_samples(f"{source}:samples", INPUTS)
    assert len(samples) == 6
    batch = samples.read(2, 5)[0]
    assert batch.shape == (3, 1, 8, 8) and batch[:, 0, 0, 0].tolist() == [2, 3, 4]
    broken = load_samples(f"{source}:broken", INPUTS)
    with pytest.raises(CalibrationDataError, match="sample 0 has no 'x'"):
        broken.read(0, 1)
    with pytest.raises(CalibrationDataError, match="has no function 'missing'"):
        load_samples(f"{source}:missing", INPUTS)


def test_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(CalibrationDataError, match="no such file"):
        load_samples(tmp_path / "none.npz", INPUTS)
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(CalibrationDataError, match=r"expected a \.npz"):
        load_samples(tmp_path / "data.csv", INPUTS)
