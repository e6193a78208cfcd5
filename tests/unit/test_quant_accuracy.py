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


def _detector(inputs):
    """A YOLO-like table [N, 50 anchors, 6]: four box fields of order 10 beside an objectness and a class score
    of order 0.05."""
    x = inputs[0]
    boxes = 10.0 * np.abs(x[:, :, :4]) + 5.0
    scores = 0.1 * (1.0 / (1.0 + np.exp(-x[:, :, 4:])))
    return [np.concatenate([boxes, scores], axis=2).astype(np.float32)]


def test_a_table_output_measures_its_scores_on_their_own_scale():
    """Half of every score gone is a detector that finds nothing; over the table taken whole it would be noise
    1e-5 and cosine 1.0000 beside boxes of order 10. Field by field it must outweigh a box error of 1%."""
    from edgec.compiler.accuracy import balanced, field_scale

    x = np.random.default_rng(3).standard_normal((12, 50, 6)).astype(np.float32)
    evaluator = Evaluator(_detector, CalibrationSet("calib", [x]), batch=4)
    reference = evaluator.reference[0]
    scale = field_scale(reference)
    assert scale is not None and scale[:4].min() > 100 * scale[4:].max()

    def scores_halved(inputs):
        out = _detector(inputs)[0].copy()
        out[:, :, 4:] *= 0.5
        return [out]

    def boxes_off(inputs):
        out = _detector(inputs)[0].copy()
        out[:, :, :4] *= 1.01
        return [out]

    lost, shifted = evaluator.measure(scores_halved), evaluator.measure(boxes_off)
    assert lost["noise"] > 10 * shifted["noise"] and lost["drop"] > shifted["drop"]
    assert lost["drop"] > 1.0  # over the default 1-point budget: the guard must act on it
    whole = np.sum((scores_halved([x])[0] - reference) ** 2) / np.sum(reference.astype(np.float64) ** 2)
    assert whole < 1e-4  # what the measure saw before: nothing
    # A field that never fires is floored at 1/1000 of the largest field's scale: its rounding is not the measure.
    dead = reference.copy()
    dead[:, :, 5] = 0.0
    assert field_scale(dead)[5] == pytest.approx(1e-3 * field_scale(dead).max())
    # Per-step class probabilities and plain feature maps are not tables: measured as before.
    probs = np.random.default_rng(4).dirichlet(np.ones(5), size=(8, 7)).astype(np.float32)
    assert field_scale(probs) is None and field_scale(np.ones((4, 3, 8, 8), np.float32)) is None
    same, scaled = balanced(probs, probs * 0.9)
    assert same is probs and np.array_equal(scaled, probs * 0.9)
