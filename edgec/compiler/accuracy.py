"""How much accuracy a lower-precision model costs: measured on labelled data or as agreement with the float model.

Shared by the ONNX quantization stage and the TFLite emitter. Every score is in points (0..100, higher is better)
so that a drop compares directly with ``--max-accuracy-drop``:

* labelled evaluation data (``labels`` = integer class ids): top-1 accuracy; the drop is float minus candidate;
* no labels, classifier output ([N, C], C >= 2): top-1 agreement with the float model (the float model scores 100);
* no labels, any other output: 100 x the mean cosine similarity with the float outputs, of the worst output (a
  model's every output counts: a recurrent state matters as much as the value beside it); an output of one value
  per sample (a probability, a score) is compared across the samples, where per-sample cosine would be 1 for any
  value of the same sign. The relative error is reported too.

``Evaluator(reference, samples)`` runs the float model once; ``evaluator.measure(runner)`` then scores any number
of candidates on the same samples.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgec.errors import CalibrationDataError

__all__ = ["Evaluator", "run_all"]

Runner = Callable[[list], list]


def run_all(runner: Runner, samples, batch: int) -> list[np.ndarray]:
    """Run ``runner`` over every sample of a CalibrationSet in batches; outputs concatenated on axis 0."""
    parts: list[list[np.ndarray]] = []
    for inputs in samples.batches(batch):
        parts.append([np.asarray(o) for o in runner(inputs)])
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))] if parts else []


def _is_classifier(output: np.ndarray) -> bool:
    return output.ndim == 2 and output.shape[1] >= 2 and np.issubdtype(output.dtype, np.floating)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(np.all(a == b, axis=1), 1.0, 0.0))


def _output_cosine(reference: np.ndarray, got: np.ndarray) -> float:
    """Mean per-sample cosine; over all samples at once when each holds at most one value."""
    if reference.ndim == 0 or reference.size <= len(reference):
        return float(_cosine(reference.reshape(1, -1), got.reshape(1, -1))[0])
    return float(np.mean(_cosine(reference, got)))


def _relative_error(reference: np.ndarray, got: np.ndarray) -> float:
    reference, got = reference.astype(np.float64), got.astype(np.float64)
    scale = np.linalg.norm(reference)
    return float(np.linalg.norm(got - reference) / scale) if scale > 0 else float(np.linalg.norm(got))


class Evaluator:
    """Scores candidate runners against the float model on fixed samples.

    Args:
        reference: runs the float model (inputs in IR order -> outputs).
        samples: a CalibrationSet; its ``labels`` (if any) make the measure top-1 accuracy.
        batch: samples per run (1 for a model with a fixed batch of 1).
    """

    def __init__(self, reference: Runner, samples, batch: int = 1):
        self.samples, self.batch = samples, batch
        self.reference = run_all(reference, samples, batch)
        if not self.reference:
            raise CalibrationDataError(f"{samples.source}: no samples left to measure accuracy on; give more "
                                       "calibration samples or --eval-data")
        first = self.reference[0]
        self.labels = None if samples.labels is None else np.asarray(samples.labels)
        if self.labels is not None:
            if not _is_classifier(first):
                raise CalibrationDataError(f"{samples.source}: 'labels' given but the model's first output has shape "
                                           f"{list(first.shape)}, not [N, classes]; drop the labels to measure "
                                           "agreement with the float model")
            if not np.issubdtype(self.labels.dtype, np.integer):
                raise CalibrationDataError(f"{samples.source}: 'labels' must be integer class ids, got dtype "
                                           f"{self.labels.dtype}")
            if self.labels.shape[0] != first.shape[0]:
                raise CalibrationDataError(f"{samples.source}: 'labels' has {self.labels.shape[0]} entries for "
                                           f"{first.shape[0]} samples")
        self.classifier = _is_classifier(first)
        if self.labels is not None:
            self.metric = "top-1 accuracy"
            self.float_score = 100.0 * float(np.mean(first.argmax(1) == self.labels))
        else:
            self.metric = "top-1 agreement with float" if self.classifier else "cosine similarity with float x100"
            self.float_score = 100.0

    def measure(self, runner: Runner) -> dict:
        """Score, drop (points, vs the float model) and error figures of ``runner`` on the samples."""
        outputs = run_all(runner, self.samples, self.batch)
        first, ref = outputs[0], self.reference[0]
        cosine = min(_output_cosine(r, o) for r, o in zip(self.reference, outputs))
        result = {"metric": self.metric, "samples": int(ref.shape[0]), "float_score": round(self.float_score, 4),
                  "cosine": round(cosine, 6),
                  "rel_error": round(max(_relative_error(r, o) for r, o in zip(self.reference, outputs)), 6)}
        if self.classifier:
            result["agreement"] = round(100.0 * float(np.mean(first.argmax(1) == ref.argmax(1))), 4)
        if self.labels is not None:
            score = 100.0 * float(np.mean(first.argmax(1) == self.labels))
        elif self.classifier:
            score = result["agreement"]
        else:
            score = 100.0 * cosine
        result["score"] = round(score, 4)
        result["drop"] = round(self.float_score - score, 4)
        return result

    def summary(self, result: dict) -> str:
        """One line for the report, e.g. 'top-1 accuracy 97.41 -> 97.22 (-0.19 points) on 540 samples'."""
        return (f"{result['metric']} {result['float_score']:.2f} -> {result['score']:.2f} "
                f"({-result['drop']:+.2f} points) on {result['samples']} samples; relative error "
                f"{result['rel_error']:.4f}, cosine {result['cosine']:.5f}")
