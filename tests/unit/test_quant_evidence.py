"""The guard's statistics: intervals, verdicts on a budget, samples needed, and class-count-independent judging.

Synthetic runners stand in for quantized models (the Evaluator takes any callable), so a 2-class model with
near-ties and a 1000-class model are judged in milliseconds.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgec.compiler.accuracy import Evaluator
from edgec.compiler.calibration import CalibrationSet
from edgec.compiler.stages.quantize_evidence import bootstrap_interval, decide, samples_to_decide, wilson
from edgec.device_agent.isa import check_isa

pytestmark = pytest.mark.unit


def test_wilson_interval_matches_published_values():
    low, high = wilson(0, 10)  # Wilson for 0/10: [0, 0.2775]
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-3)
    low, high = wilson(81, 263)  # Newcombe (1998) example: 0.2553 .. 0.3662
    assert low == pytest.approx(0.2553, abs=1e-3) and high == pytest.approx(0.3662, abs=1e-3)


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    values = np.random.default_rng(3).normal(2.0, 1.0, 200)
    first, again = bootstrap_interval(values), bootstrap_interval(values)
    assert first == again and first[0] < values.mean() < first[1] and first[1] - first[0] < 0.5


def test_samples_to_decide_grows_as_the_rate_nears_the_budget():
    far, near = samples_to_decide(0.05, 0.01, 10), samples_to_decide(0.02, 0.01, 10)
    assert 10 < far < near
    low, _ = wilson(round(0.05 * far), far)
    assert low > 0.01  # that many samples would indeed decide it
    assert samples_to_decide(0.01, 0.01, 30) is None


def _runner(outputs):
    """A runner that returns rows of ``outputs`` in the order the Evaluator asks for them."""
    state = {"at": 0}

    def run(inputs):
        n = len(inputs[0])
        rows = outputs[state["at"]:state["at"] + n]
        state["at"] += n
        return [rows]

    return run


def _evaluate(reference, candidate, labels=None):
    x = np.zeros((len(reference), 1), np.float32)
    evaluator = Evaluator(_runner(reference), CalibrationSet("calib.npz", [x], labels), batch=16)
    return evaluator.measure(_runner(candidate))


def test_binary_near_ties_that_flip_do_not_refuse_a_good_model():
    rng = np.random.default_rng(0)
    n = 200
    margin = np.where(np.arange(n) < 20, 0.01, rng.uniform(2, 6, n))  # 20 near-ties, the rest confident
    reference = np.stack([np.zeros(n), margin], 1).astype(np.float32)
    candidate = reference.copy()
    candidate[:20, 1] = -0.01  # every near-tie flips: 10% disagreement
    measured = _evaluate(reference, candidate)
    assert measured["agreement"] == pytest.approx(90.0) and measured["flip_interval"][0] > 1.0
    evidence = decide(measured, budget=1.0)
    assert evidence["verdict"] == "holds" and evidence["accept"]
    assert evidence["measure"].startswith("expected accuracy drop") and evidence["interval"][1] <= 1.0


def test_1000_class_confident_flips_exceed_with_the_interval():
    rng = np.random.default_rng(1)
    reference = rng.normal(0, 1, (300, 1000)).astype(np.float32)
    reference[np.arange(300), rng.integers(0, 1000, 300)] += 12.0  # confident top-1
    candidate = reference.copy()
    flipped = np.arange(0, 300, 5)  # 20% move their top-1 to another class
    candidate[flipped, (reference[flipped].argmax(1) + 1) % 1000] += 30.0
    evidence = decide(_evaluate(reference, candidate), budget=1.0)
    assert evidence["verdict"] == "exceeds" and not evidence["accept"]
    assert evidence["interval"][0] > 1.0 and "95% interval" in evidence["why"]


def test_few_samples_are_undecided_and_say_how_many_would_decide():
    rng = np.random.default_rng(2)
    reference = rng.normal(0, 1, (30, 10)).astype(np.float32)
    reference[np.arange(30), rng.integers(0, 10, 30)] += 8.0
    candidate = reference.copy()
    candidate[0, (reference[0].argmax() + 1) % 10] += 20.0  # one confident flip in 30 samples: ~3.3 points
    evidence = decide(_evaluate(reference, candidate), budget=2.0)
    assert evidence["verdict"] == "undecided" and evidence["needed"] > 30
    assert f"about {evidence['needed']} samples would decide it" in evidence["why"]
    assert not evidence["accept"]  # the estimate is over budget: the guard acts, but may not refuse on it


def test_labels_give_a_paired_accuracy_interval():
    rng = np.random.default_rng(4)
    reference = rng.normal(0, 1, (400, 5)).astype(np.float32)
    labels = reference.argmax(1)
    labels[:40] = (labels[:40] + 1) % 5  # float: 90%
    candidate = reference.copy()
    candidate[np.arange(40, 48), (labels[40:48] + 1) % 5] += 50.0  # 8 correct answers lost: 2 points
    measured = _evaluate(reference, candidate, labels)
    evidence = decide(measured, budget=5.0)
    assert measured["drop"] == pytest.approx(2.0, abs=0.3) and evidence["measure"] == "top-1 accuracy drop"
    assert evidence["verdict"] == "holds" and evidence["interval"][0] < 2.0 < evidence["interval"][1] <= 5.0


def test_random_split_of_a_class_ordered_file_mixes_the_classes():
    x = np.arange(100, dtype=np.float32)[:, None]
    labels = np.repeat([0, 1], 50)  # classes in blocks, as a file sorted by class comes
    part, rest = CalibrationSet("calib.npz", [x], labels).random_split(0.5, seed=0)
    assert len(part) == 50 and len(rest) == 50
    assert 15 < int(part.labels.sum()) < 35  # both classes on both sides
    rows = np.concatenate([b[0] for b in part.batches(8)])[:, 0].astype(int)
    assert np.array_equal(labels[rows], part.labels)  # samples and labels stay paired
    assert sorted(set(rows) | set(rest.arrays[0][:, 0].astype(int))) == list(range(100))


def test_isa_check_flags_u8s8_without_vnni_and_dot_product_on_a72():
    x86 = {"report": {"quantization": {"requires": [{"arch": "x86_64", "any_of": ["avx512_vnni", "avx_vnni"],
                                                     "effect": "accuracy", "reason": "U8S8 saturates"}]}}}
    bad = check_isa(x86, flags={"sse4_2", "avx", "avx2", "fma"}, arch="x86_64")
    assert bad["ok"] is False and "avx512_vnni" in bad["issues"][0]["reason"]
    assert bad["issues"][0]["effect"] == "accuracy"
    assert check_isa(x86, flags={"avx2", "avx512_vnni"}, arch="x86_64")["ok"] is True
    arm = {"report": {"quantization": {"requires": [{"arch": "aarch64", "any_of": ["dotprod"], "effect": "speed",
                                                     "reason": "int8 for dot-product cores"}]}}}
    a72 = check_isa(arm, flags={"fp", "asimd", "evtstrm", "crc32", "cpuid"}, arch="aarch64")
    assert a72["ok"] is False and "asimddp" in a72["issues"][0]["reason"]
    assert check_isa({"report": {}}, flags=set(), arch="x86_64")["ok"] is None
