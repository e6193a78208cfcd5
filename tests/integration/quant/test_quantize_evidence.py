"""The guard on a calibration file ordered by class (the case that fooled the first-half/second-half split):
the held-out samples are drawn at random, the final model is calibrated on all samples, the report carries the
evidence, and the bundle records the ISA features its int8 scheme assumes."""

from __future__ import annotations

import numpy as np
import pytest

from edgec import api
from edgec.examples.data import digits, write_npz

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("quant-cnn")]


@pytest.fixture(scope="module")
def ordered_bundle(digits_cnn_trained, tmp_path_factory):
    (x_train, y_train), _ = digits("nchw")
    order = np.argsort(y_train[:120], kind="stable")  # classes in blocks: 0s first, 9s last
    tmp = tmp_path_factory.mktemp("ordered")
    calib = write_npz(tmp / "ordered.npz", {"x": x_train[:120][order]})
    bundle = api.compile(str(digits_cnn_trained.model_file), tmp / "cnn.bundle", target="x86-avx512-vnni",
                         quantize="int8", calibration=str(calib), max_accuracy_drop=1.0, seed=7)
    return bundle, calib


def test_an_ordered_file_is_split_at_random_and_judged_by_its_interval(ordered_bundle, digits_cnn_trained,
                                                                     bundle_accuracy):
    bundle, _ = ordered_bundle
    accuracy = bundle.manifest["report"]["accuracy"]
    evidence = accuracy["evidence"]
    assert accuracy["samples"] == 60 and "held out at random (seed 7)" in accuracy["summary"]
    assert "calibrated on all 120" in accuracy["summary"]
    low, high = evidence["interval"]
    assert low <= evidence["estimate"] <= high and evidence["verdict"] in ("holds", "undecided")
    assert evidence["accept"] and "95% interval" in evidence["why"]
    # The int8 model really is good on labelled held-out data (the ordered file fooled nothing).
    int8 = bundle_accuracy(bundle, digits_cnn_trained.x_test, digits_cnn_trained.y_test)
    assert digits_cnn_trained.float_accuracy - int8 <= 1.0
    notes = next(p for p in bundle.manifest["passes"] if p["name"] == "accuracy-guard")["notes"]
    assert any(n.startswith("step 0: all layers quantized") and "[" in n for n in notes)  # what --explain shows
    calibration = next(p for p in bundle.manifest["passes"] if p["name"] == "quantize-int8")["notes"]
    assert any("over 120 samples (all of them" in n for n in calibration)


def test_the_bundle_records_the_isa_its_int8_scheme_assumes(ordered_bundle):
    from edgec.device_agent.isa import check_isa

    bundle, _ = ordered_bundle
    requires = bundle.manifest["report"]["quantization"]["requires"]
    assert requires[0]["arch"] == "x86_64" and "avx512_vnni" in requires[0]["any_of"]
    assert requires[0]["effect"] == "accuracy" and "VPMADDUBSW" in requires[0]["reason"]
    avx2_only = check_isa(bundle.manifest, flags={"sse4_2", "avx", "avx2", "fma"}, arch="x86_64")
    assert avx2_only["ok"] is False and "reduce_range" in avx2_only["issues"][0]["reason"]


def test_the_same_inputs_and_seed_give_the_same_bundle(ordered_bundle, digits_cnn_trained, tmp_path):
    bundle, calib = ordered_bundle
    again = api.compile(str(digits_cnn_trained.model_file), tmp_path / "again.bundle", target="x86-avx512-vnni",
                        quantize="int8", calibration=str(calib), max_accuracy_drop=1.0, seed=7)
    assert again.model_path.read_bytes() == bundle.model_path.read_bytes()
