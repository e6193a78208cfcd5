"""One definition per metric (``edgec.compiler.accuracy``): the score a sweep or the demo gives a variant
(``score``, on outputs already computed) is the score the compile report's ``Evaluator`` gives the same outputs."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.compiler.accuracy import (
    COSINE,
    TOP1_ACCURACY,
    TOP1_AGREEMENT,
    Evaluator,
    cosine,
    output_cosine,
    score,
    top1_agreement,
)
from edgec.compiler.calibration import CalibrationSet

pytestmark = pytest.mark.unit

RNG = np.random.default_rng(5)
X = RNG.standard_normal((30, 4)).astype(np.float32)
W = RNG.standard_normal((4, 3)).astype(np.float32)


def classify(inputs):
    return [inputs[0] @ W]


def noisy_classify(inputs):
    return [inputs[0] @ W + np.float32(0.6) * np.sin(inputs[0][:, :3] * 7)]


def regress(inputs):  # a value and a state: two non-classifier outputs, the second one worse
    return [inputs[0][:, :1] * 2.0, inputs[0] * 0.5]


def noisy_regress(inputs):
    value, state = regress(inputs)
    return [value * 1.05, state + np.float32(0.3) * np.cos(inputs[0] * 5)]


@pytest.mark.parametrize("float_model, candidate, labelled, metric", [
    (classify, noisy_classify, True, TOP1_ACCURACY),
    (classify, noisy_classify, False, TOP1_AGREEMENT),
    (regress, noisy_regress, False, COSINE),
])
def test_a_sweep_scores_what_the_compile_report_measures(float_model, candidate, labelled, metric):
    labels = float_model([X])[0].argmax(1) if labelled else None
    if labels is not None:
        labels[:3] = (labels[:3] + 1) % 3
    measured = Evaluator(float_model, CalibrationSet("eval", [X], labels), batch=7).measure(candidate)
    value, name = score(candidate([X]), labels, float_model([X]))
    assert name == measured["metric"] == metric
    assert value == pytest.approx(measured["score"], abs=1e-3)
    assert 0.0 < value < 100.0  # the candidate really differs: the comparison is not 100 == 100


def test_the_worst_output_counts_and_the_old_l2_rule_is_gone():
    reference, got = regress([X]), noisy_regress([X])
    value, _ = score(got, None, reference)
    assert value == pytest.approx(100.0 * min(output_cosine(r, o) for r, o in zip(reference, got)))
    assert value == pytest.approx(100.0 * output_cosine(reference[1], got[1]))


def test_the_metric_primitives():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert cosine(a, a * 3) == pytest.approx(1.0) and cosine(np.zeros(3), np.zeros(3)) == 1.0
    assert cosine([1.0, 0.0], [0.0, 1.0]) == pytest.approx(0.0)
    assert top1_agreement(a, np.array([[1.0, 0.0], [3.0, 0.0]])) == 0.5
    maps = np.zeros((1, 2, 3, 3))
    maps[0, 1, 0, :] = 1.0  # per-window agreement of a [N, C, H, W] map: 3 of 9 windows pick class 1
    assert top1_agreement(maps, np.zeros_like(maps)) == pytest.approx(6 / 9)
    assert score([np.zeros((2, 3))], None, None) == (None, "")
