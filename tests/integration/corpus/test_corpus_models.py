"""Every corpus model (real pretrained models that packages ship) compiles for ``host`` (ONNX) and ``rpi4``
(TFLite, or ONNX through ``--format auto`` where no TFLite converter can take it), in float and in int8
calibrated on real inputs, verifies, keeps its fidelity on real inputs, and benchmarks through the agent.

Cost: each bundle is compiled once per session (``corpus_builds``); the tests of one model share an xdist group.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgec import api
from edgec.examples.corpus import CORPUS
from edgec.examples.corpus_metrics import bundle_runner, fidelity, source_runner, timed

pytestmark = pytest.mark.integration

# The score that a float bundle and an int8 bundle must keep against the source, on real inputs: the model's
# own metric (top-1 / map IoU / characters / speech flags / anchors / steps) and the first output's cosine.
FLOAT_FLOOR = {"metric": 0.99, "cosine": 0.999}
INT8_FLOOR = {"mtcnn-pnet": 0.85, "mtcnn-rnet": 0.85, "mtcnn-onet": 0.85, "fer": 0.75, "ppocr-det": 0.7,
              "ppocr-rec": 0.7, "silero-vad": 0.85, "ddddocr-det": 0.5, "ddddocr-old": 0.99}
INT8_COSINE = 0.9
# Where no TFLite file comes out that LiteRT runs, rpi4 falls back to its other runtime (ONNX) under
# --format auto, with the reason in the report: {(model, precision or None for both): why}.
RPI4_ONNX = {("silero-vad", None): "onnx2tf cannot convert its LSTM with a state input",
             ("ddddocr-old", None): "already quantized with onnxruntime-only ops (ConvInteger, DynamicQuantizeLSTM)",
             ("mtcnn-rnet", "int8"): "LiteRT's XNNPACK delegate fails to prepare the int8 file (fully connected "
                                     "node after MTCNN's permute+flatten and PReLU)",
             ("mtcnn-onet", "int8"): "the same XNNPACK failure as R-Net's",
             ("ppocr-rec", "none"): "LiteRT's XNNPACK delegate fails to reshape the converted float model at 48x160",
             ("ppocr-det", "none"): "LiteRT's XNNPACK delegate fails to reshape the converted float model at "
                                    "256x256",
             ("ppocr-rec", "int8"): "TFLiteConverter cannot calibrate onnx2tf's PP-OCRv4 graph (\"model has 0 "
                                    "Signatures\")",
             ("ppocr-det", "int8"): "the same TFLiteConverter calibration failure as rec's"}
# Exact gaps still open (xfail strict: a fix turns them into failures that say "remove the xfail"), and known gaps
# whose compile alone would spend minutes of CI before failing (xfail run=False). None today.
GAPS: dict[tuple, str] = {}
NOT_RUN: dict[tuple, str] = {}
SLOW = {"ppocr-rec", "ddddocr-det", "ppocr-det"}


def _cases():
    for name in CORPUS:
        for target in ("host", "rpi4"):
            for precision in ("none", "int8"):
                marks = [pytest.mark.xdist_group(f"corpus-{name}")]
                if name in SLOW or target == "rpi4":
                    marks.append(pytest.mark.slow)
                if (name, target, precision) in GAPS:
                    marks.append(pytest.mark.xfail(strict=True, reason=GAPS[name, target, precision]))
                if (name, target, precision) in NOT_RUN:
                    marks.append(pytest.mark.xfail(run=False, reason=NOT_RUN[name, target, precision]))
                yield pytest.param(name, target, precision, marks=marks, id=f"{name}-{target}-{precision}")


@pytest.mark.parametrize(("name", "target", "precision"), list(_cases()))
def test_corpus_model_compiles_verifies_and_keeps_fidelity(corpus_builds, name, target, precision):
    model = CORPUS[name]
    bundle = corpus_builds.bundle(name, target, precision)
    falls_back = target == "rpi4" and ((name, None) in RPI4_ONNX or (name, precision) in RPI4_ONNX)
    assert bundle.format == ("onnx" if target == "host" or falls_back else "tflite")
    report = bundle.manifest["report"]
    if falls_back:  # --format auto: the reason is in the report
        fallback = report["format"]["fallback"]
        assert fallback["from"] == "tflite" and fallback["to"] == "onnx" and fallback["reason"]
    if model.prequantized and precision == "int8":
        assert report["quantization"]["precision"] == "already quantized", report["quantization"]
    bundle.check_files()
    scores = fidelity(model, source_runner(model), bundle_runner(bundle), corpus_builds.eval_samples(name))
    metric = next(v for k, v in scores.items() if k not in ("cosine", "chars_decoded", "speech_fraction"))
    if precision == "none" or model.prequantized:
        assert metric >= FLOAT_FLOOR["metric"] and scores["cosine"] >= FLOAT_FLOOR["cosine"], scores
        # what benchmarks/zoo.py times: the runtime alone on inputs already in the model's layout, same values
        run = bundle_runner(bundle)
        feed = model.feed(corpus_builds.eval_samples(name), 0)
        raw = [np.sort(np.ravel(v)) for v in timed(run, feed)()]
        for value in run(feed):
            assert any(r.shape == (value.size,) and np.allclose(r, np.sort(value.ravel())) for r in raw)
    else:
        assert metric >= INT8_FLOOR[name] and scores["cosine"] >= INT8_COSINE, scores


@pytest.mark.parametrize(("name", "target", "precision"),
                         [c for c in _cases() if c.values[2] == "int8"])
def test_corpus_int8_bundle_benchmarks_through_the_agent(corpus_builds, name, target, precision):
    bundle = corpus_builds.bundle(name, target, precision)
    doc = api.bench(bundle.path, "local", runs=3, warmup=1, threads=1, idle_s=0, power="none").result
    assert doc["bundle_id"] == bundle.bundle_id
    assert doc["latency_ms"]["count"] == 3 and doc["latency_ms"]["p50"] > 0
    assert all(o["ok"] for o in doc["check"]["outputs"]), doc["check"]
