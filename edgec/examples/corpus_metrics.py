"""Fidelity of a compiled corpus model against its source, on real inputs, with each model's own metric.

A *runner* is ``run(feeds) -> outputs``: one sample (batch 1) in the source model's layout, outputs in the
source's order and layout. ``onnx_runner``, ``bundle_runner``, ``tflite_runner``, ``keras_runner`` and
``torch_runner`` make them; ``fidelity`` runs the source and a candidate on the same samples and scores:

* ``top1``: agreement of the arg-max of the last output (class / face probability; per window for P-Net's
  map), and the cosine of the first output over the whole set;
* ``db-iou``: mean IoU of the DBNet probability maps binarised at rapidocr's 0.3, and cosine;
* ``ctc``: character agreement (1 - edit distance / length) of the greedy CTC decodes with the dictionary the
  recogniser ships in its metadata, and cosine;
* ``vad``: speech / non-speech agreement per 32 ms chunk over a stream, each runner carrying its own state;
* ``yolo``: IoU of the sets of anchors scoring above 0.5 (objectness x class), and cosine;
* ``steps``: per-step arg-max agreement of a sequence output (the already-quantized recogniser), and cosine.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from edgec.compiler.accuracy import cosine, top1_agreement

__all__ = ["METRICS", "bundle_runner", "fidelity", "keras_runner", "onnx_runner", "source_runner", "tflite_runner", "timed",
           "torch_runner", "vad_stream_inputs"]

Runner = Callable[[dict], list]
DB_THRESHOLD = 0.3  # rapidocr's Det.thresh
VAD_CHUNK, VAD_CONTEXT, VAD_RATE = 512, 64, 16000


def _edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def ctc_decode(probs: np.ndarray, charset: list[str]) -> str:
    """Greedy CTC: best class per step, repeats merged, blanks (index 0) dropped."""
    best = probs.argmax(axis=-1)
    keep = (best != 0) & np.concatenate([[True], best[1:] != best[:-1]])
    return "".join(charset[i] if i < len(charset) else "?" for i in best[keep])


def ppocr_charset(model_path) -> list[str]:
    """The recogniser's dictionary as rapidocr builds it: blank, the ``character`` metadata lines, a space."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(model_path), load_external_data=False).metadata_props}
    return ["blank", *meta["character"].splitlines(), " "]


def _per_sample(outputs: list[list[np.ndarray]], k: int) -> np.ndarray:
    return np.concatenate([o[k] for o in outputs])


def _top1(ref, got, model) -> dict:
    last = len(ref[0]) - 1
    # Per sample, or per window for P-Net's map of face probabilities.
    agree = np.mean([top1_agreement(r[last], g[last]) for r, g in zip(ref, got)])
    return {"top1_agreement": float(agree)}


def _db_iou(ref, got, model) -> dict:
    ious = []
    for r, g in zip(ref, got):
        a, b = r[0] > DB_THRESHOLD, g[0] > DB_THRESHOLD
        union = np.logical_or(a, b).sum()
        ious.append(np.logical_and(a, b).sum() / union if union else 1.0)
    return {"mean_iou": float(np.mean(ious))}


def _ctc(ref, got, model) -> dict:
    charset = ppocr_charset(model.path)
    scores, texts = [], []
    for r, g in zip(ref, got):
        a, b = ctc_decode(r[0][0], charset), ctc_decode(g[0][0], charset)
        scores.append(1.0 - _edit_distance(a, b) / max(len(a), len(b), 1))
        texts.append(a)
    return {"char_agreement": float(np.mean(scores)), "chars_decoded": int(sum(map(len, texts)))}


def _yolo(ref, got, model) -> dict:
    ious = []
    for r, g in zip(ref, got):
        a = r[0][..., 4] * r[0][..., 5] > 0.5
        b = g[0][..., 4] * g[0][..., 5] > 0.5
        union = np.logical_or(a, b).sum()
        ious.append(np.logical_and(a, b).sum() / union if union else 1.0)
    return {"anchor_iou": float(np.mean(ious))}


def _steps(ref, got, model) -> dict:
    same = [np.mean(r[0].argmax(axis=-1) == g[0].argmax(axis=-1)) if r[0].shape == g[0].shape else 0.0
            for r, g in zip(ref, got)]
    return {"step_agreement": float(np.mean(same))}


METRICS: dict[str, Callable] = {"top1": _top1, "db-iou": _db_iou, "ctc": _ctc, "yolo": _yolo, "steps": _steps}


def _align(ref: list, got: list) -> list:
    """``got`` in ``ref``'s order. A TFLite file lists its outputs in its own order (onnx2tf's and the
    interpreter's): match them to the source's by shape, which must then be unique."""
    if [r.shape for r in ref] == [g.shape for g in got]:
        return got
    shapes = [g.shape for g in got]
    if len(got) != len(ref) or len(set(shapes)) != len(shapes) or sorted(map(str, shapes)) != sorted(
            str(r.shape) for r in ref):
        raise ValueError(f"outputs {shapes} do not match the source's {[r.shape for r in ref]}")
    return [got[shapes.index(r.shape)] for r in ref]


def fidelity(model, source: Runner, candidate: Runner, samples: dict) -> dict:
    """Score ``candidate`` against ``source`` on ``samples`` ({input: array, samples on axis 0})."""
    if model.metric == "vad":
        return _vad_agreement(source, candidate, samples)
    count = len(next(iter(samples.values())))
    feeds = [model.feed(samples, k) for k in range(count)]
    ref = [[np.asarray(o, np.float32) for o in source(f)] for f in feeds]
    got = [_align(r, [np.asarray(o, np.float32) for o in candidate(f)]) for r, f in zip(ref, feeds)]
    scores = METRICS[model.metric](ref, got, model)
    # Over the whole set: one sample's near-empty map (a photo without text) has no meaningful direction.
    scores["cosine"] = cosine(np.concatenate([r[0].ravel() for r in ref]), np.concatenate([g[0].ravel() for g in got]))
    return scores


def vad_stream_inputs(model_path: str, audio: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(chunks with context (count, 576), states (count, 2, 1, 128)) as silero's OnnxWrapper feeds them."""
    run = onnx_runner(model_path)
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros((1, VAD_CONTEXT), np.float32)
    chunks, states = [], []
    for k in range(count):
        chunk = np.concatenate([context, audio[None, k * VAD_CHUNK:(k + 1) * VAD_CHUNK]], axis=1).astype(np.float32)
        chunks.append(chunk[0])
        states.append(state)
        _, state = run({"input": chunk, "state": state, "sr": np.array(VAD_RATE, np.int64)})
        context = chunk[:, -VAD_CONTEXT:]
    return np.stack(chunks), np.stack(states)


def _vad_agreement(source: Runner, candidate: Runner, samples: dict) -> dict:
    """Stream the chunks through each runner, each carrying its own state: speech (p > 0.5) agreement."""
    flags = []
    for run in (source, candidate):
        state = samples["state"][0]
        probs = []
        for chunk in samples["input"]:
            prob, state = run({"input": chunk[None], "state": state, "sr": np.array(VAD_RATE, np.int64)})
            probs.append(float(np.ravel(prob)[0]))
        flags.append(np.array(probs))
    return {"speech_agreement": float(np.mean((flags[0] > 0.5) == (flags[1] > 0.5))),
            "speech_fraction": float(np.mean(flags[0] > 0.5)),
            "cosine": cosine(flags[0], flags[1])}


def onnx_runner(path, threads: int = 1) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(feeds: dict) -> list:
        return session.run(None, {n: feeds[n] for n in names})

    run.prepare = lambda feeds: functools.partial(session.run, None, {n: feeds[n] for n in names})
    return run


def bundle_runner(bundle, threads: int = 1) -> Runner:
    """Run an edgec bundle with its own runtime, converting layouts and int8 io with its io signature."""
    from edgec.bundle import from_model_layout, to_model_layout
    from edgec.runtimes import load_runtime, runtime_for_format

    session = load_runtime(runtime_for_format(bundle.format)).load(bundle.model_path, threads=threads)
    ins, outs = bundle.inputs, bundle.outputs
    manifest_names = [e["name"] for e in ins]
    session_names = list(getattr(session, "input_names", manifest_names))
    # As edgec.report.evaluate.run_bundle: TFLite tensors carry their own names, listed in the manifest's order.
    order = [manifest_names.index(n) for n in session_names] if sorted(session_names) == sorted(manifest_names) \
        else list(range(len(ins)))

    def model_inputs(feeds: dict) -> list:
        values = list(feeds.values()) if len(feeds) == 1 == len(ins) else [feeds[n] for n in manifest_names]
        return [to_model_layout(values[k], ins[k]) for k in order]

    def run(feeds: dict) -> list:
        produced = session.run(model_inputs(feeds))
        got = dict(zip(getattr(session, "output_names", [e["name"] for e in outs]), produced))
        return [from_model_layout(got.get(e["name"], produced[k]), e) for k, e in enumerate(outs)]

    run.prepare = lambda feeds: functools.partial(session.run, model_inputs(feeds))
    return run


def tflite_runner(path, threads: int = 1) -> Runner:
    """A float-io .tflite (fer's own int8 build keeps float io)."""
    from edgec.runtimes import litert

    session = litert.load(path, threads=threads)

    def run(feeds: dict) -> list:
        return session.run(list(feeds.values()))

    run.prepare = lambda feeds: functools.partial(session.run, list(feeds.values()))
    return run


def timed(run: Runner, feeds: dict) -> Callable[[], object]:
    """A call that runs the model alone on ``feeds`` already in its layout: what latency measures. A runner's
    own layout conversion and name matching cost 10-20 us a call, a fifth of MTCNN P-Net's whole run, and made
    edgec's TFLite P-Net look 1.4x slower than onnx2tf's byte-for-byte equal graph."""
    prepare = getattr(run, "prepare", None)
    return prepare(feeds) if prepare is not None else functools.partial(run, feeds)


def keras_runner(path) -> Runner:
    import tf_keras  # fer's .h5 was written by Keras 2.0.5: Keras 3 cannot read it

    model = tf_keras.models.load_model(str(path), compile=False)

    def run(feeds: dict) -> list:
        out = model(next(iter(feeds.values())), training=False)
        return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]

    return run


def source_runner(model) -> Runner:
    """The corpus model's source, run by its own framework (torch, tf_keras) or onnxruntime."""
    if model.factory:
        return torch_runner(model.factory)
    if model.path.suffix in (".h5", ".hdf5"):
        return keras_runner(model.path)
    return onnx_runner(model.path)


def torch_runner(factory: str) -> Runner:
    import importlib

    import torch

    module, name = factory.split(":")
    net = getattr(importlib.import_module(module), name)()

    def run(feeds: dict) -> list:
        with torch.no_grad():
            out = net(*(torch.from_numpy(v) for v in feeds.values()))
        return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]

    return run
