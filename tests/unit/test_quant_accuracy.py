"""The accuracy measure shared by the quantization stage and the TFLite emitter."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.compiler.accuracy import Evaluator
from edgec.compiler.calibration import CalibrationSet
from edgec.errors import CalibrationDataError

pytestmark = pytest.mark.unit

WEIGHTS = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)


def classifier(inputs):
    return [inputs[0] @ WEIGHTS]


def test_labels_give_accuracy_and_drop_in_points():
    x = np.random.default_rng(1).standard_normal((40, 4)).astype(np.float32)
    labels = classifier([x])[0].argmax(1)
    labels[:4] = (labels[:4] + 1) % 3  # the float model gets 36 of 40 right
    evaluator = Evaluator(classifier, CalibrationSet("eval.npz", [x], labels), batch=8)
    assert evaluator.metric == "top-1 accuracy" and evaluator.float_score == pytest.approx(90.0)

    def worse(inputs):
        out = classifier(inputs)[0].copy()
        out[:, 0] += 100.0  # always predicts class 0
        return [out]

    result = evaluator.measure(worse)
    assert result["drop"] == pytest.approx(90.0 - 100.0 * float(np.mean(labels == 0)), abs=1e-3)
    assert "top-1 accuracy 90.00 ->" in evaluator.summary(result)


def test_without_labels_agreement_with_float_for_classifiers_cosine_otherwise():
    x = np.random.default_rng(2).standard_normal((20, 4)).astype(np.float32)
    evaluator = Evaluator(classifier, CalibrationSet("calib", [x]), batch=5)
    same = evaluator.measure(classifier)
    assert same["metric"] == "top-1 agreement with float" and same["drop"] == 0 and same["rel_error"] == 0

    def regress(inputs):
        return [inputs[0][:, :1] * 2.0]

    reg = Evaluator(regress, CalibrationSet("calib", [x]), batch=5)
    noisy = reg.measure(lambda inputs: [regress(inputs)[0] * 1.1])
    assert reg.metric.startswith("cosine") and noisy["drop"] == pytest.approx(0.0, abs=1e-6)
    assert noisy["rel_error"] == pytest.approx(0.1, rel=1e-4)


def test_labels_of_the_wrong_kind_are_refused():
    x = np.zeros((6, 4), np.float32)
    with pytest.raises(CalibrationDataError, match="'labels' must be integer class ids"):
        Evaluator(classifier, CalibrationSet("eval.npz", [x], np.zeros(6, np.float32)))
    with pytest.raises(CalibrationDataError, match="'labels' has 5 entries for 6 samples"):
        Evaluator(classifier, CalibrationSet("eval.npz", [x], np.zeros(5, np.int64)))


def test_every_output_counts_and_one_value_per_sample_is_compared_across_samples():
    """silero-vad: a speech probability (one value per sample) and a recurrent state. Per-sample cosine of one
    positive value is 1 whatever it is, and the state was not looked at: a quantized VAD whose state was ruined
    measured a drop of 0."""
    x = np.repeat(np.linspace(0.1, 0.9, 16, dtype=np.float32)[:, None], 8, axis=1)  # speech probability 0.1..0.9

    def vad(inputs):
        return [inputs[0].mean(1, keepdims=True), inputs[0] * 2.0]

    evaluator = Evaluator(vad, CalibrationSet("calib.npz", [x]), batch=1)
    assert evaluator.measure(vad)["drop"] == pytest.approx(0.0)

    def constant_probability(inputs):
        return [np.full((len(inputs[0]), 1), 0.5, np.float32), inputs[0] * 2.0]

    def ruined_state(inputs):
        return [inputs[0].mean(1, keepdims=True), -inputs[0]]

    assert evaluator.measure(constant_probability)["drop"] > 5.0
    assert evaluator.measure(ruined_state)["drop"] > 100.0
