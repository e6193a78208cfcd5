"""edgec.compare: the one closeness rule (|a-b| <= atol + rtol*|ref| per element) every check uses."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.compare import FLOAT_ATOL, FLOAT_RTOL, compare_output, compare_outputs, describe, matches

pytestmark = pytest.mark.unit


def test_a_map_that_is_near_zero_everywhere_is_not_a_false_alarm():
    # PP-OCRv4 det on noise: a sigmoid map ~7e-4 at most; a float rewrite moved it by 1.8e-7. The old measure
    # (max|a-b| / max|ref| = 2.4e-4 > 1e-4) failed the compile; elementwise it is far within tolerance.
    rng = np.random.default_rng(0)
    ref = (rng.random((1, 1, 64, 64)) * 7.4e-4).astype(np.float32)
    got = ref + rng.uniform(-1.79e-7, 1.79e-7, ref.shape).astype(np.float32)
    record = compare_output("map", ref, got, FLOAT_RTOL, FLOAT_ATOL)
    assert record["ok"] and record["rel_diff"] > 1e-4 and record["worst"] < 0.01


def test_a_real_defect_fails_and_the_figures_say_by_how_much():
    ref = np.linspace(-5, 5, 1000).astype(np.float32)
    got = ref.copy()
    got[10] += 0.05  # one wrong element
    record = compare_output("logits", ref, got, FLOAT_RTOL, FLOAT_ATOL)
    assert not record["ok"] and record["max_abs_diff"] == pytest.approx(0.05, rel=1e-3)
    assert record["worst"] > 5 and "max abs diff 0.05" in describe(record)


def test_elementwise_not_against_the_largest_value():
    # An error of 1e-3 on an element of 1e-3 is 100% wrong, though tiny beside the output's max of 10.
    ref = np.array([10.0, 1e-3])
    assert compare_output("y", ref, np.array([10.0, 2e-3]), 1e-3, 1e-5)["ok"] is False
    assert compare_output("y", ref, np.array([10.005, 1e-3]), 1e-3, 1e-5)["ok"] is True


def test_non_finite_and_shape_mismatches():
    assert compare_output("y", np.array([np.nan, 1.0]), np.array([np.nan, 1.0]), 1e-3, 1e-4)["ok"]
    assert not compare_output("y", np.array([0.0, 1.0]), np.array([np.nan, 1.0]), 1e-3, 1e-4)["ok"]
    mismatch = compare_output("y", np.zeros((2, 3)), np.zeros((3, 2)), 1e-3, 1e-4)
    assert not mismatch["ok"] and "shape [3, 2] != reference [2, 3]" in describe(mismatch)
    assert not matches([np.zeros(2)], [np.zeros(2), np.zeros(2)]) and not matches([np.zeros(2)], None)


def test_one_absolute_tolerance_per_output():
    want = [np.array([100.0, 0.0]), np.array([1.0, 0.0])]
    got = [np.array([100.0, 0.05]), np.array([1.0, 0.05])]
    records = compare_outputs(["big", "small"], want, got, 1e-3, [0.1, 1e-3])
    assert [r["ok"] for r in records] == [True, False]
