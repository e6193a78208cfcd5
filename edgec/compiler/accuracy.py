"""How much accuracy a lower-precision model costs: measured on labelled data or as agreement with the float model.

Shared by the ONNX quantization stage and the TFLite emitter. Every score is in points (0..100, higher is better)
so that a drop compares directly with ``--max-accuracy-drop``:

* labelled evaluation data (``labels`` = integer class ids): top-1 accuracy; the drop is float minus candidate;
* no labels, classifier output ([N, C], C >= 2): top-1 agreement with the float model (the float model scores 100);
* no labels, [N, T, C] probabilities (a CTC recogniser): top-1 agreement per step, as a classifier's;
* no labels, any other output: 100 x the mean cosine similarity with the float outputs (an [N, items, fields]
  table, a detector's boxes beside its scores, field by field on each field's scale: ``field_scale``),
  weighted by each
  sample's energy in the float output (a detector's empty map has no direction), of the worst output (a
  model's every output counts: a recurrent state matters as much as the value beside it); an output of one value
  per sample (a probability, a score) is compared across the samples, where per-sample cosine would be 1 for any
  value of the same sign. The relative error is reported too.

Every measure carries what ``edgec.compiler.stages.quantize_evidence`` needs to judge it: a 95% interval of the
drop, and for classifiers the flip (disagreement) interval and the *expected* accuracy drop under the float
model's softmax (a flip between near-tied classes costs little), plus the output noise power (1 / SQNR).

``Evaluator(reference, samples)`` runs the float model once; ``evaluator.measure(runner)`` then scores any number
of candidates on the same samples. ``score(outputs, labels, reference)`` is the same measure, without the
intervals, for outputs already computed (``edgec sweep``, the demo, the report). Each metric is defined once here
(``top1_accuracy``, ``top1_agreement``, ``cosine``/``cosine_rows``/``output_cosine``, ``relative_error``) and used
by compile, the quantization guard, the TFLite emitter, sweeps, the demo and the corpus fidelity checks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgec.errors import CalibrationDataError

__all__ = ["COSINE", "TOP1_ACCURACY", "TOP1_AGREEMENT", "Evaluator", "balanced", "cosine", "cosine_rows",
           "field_scale", "is_classifier", "output_cosine", "relative_error", "run_all", "score", "top1_accuracy", "top1_agreement"]

Runner = Callable[[list], list]

# The metrics' names, as the reports show them.
TOP1_ACCURACY = "top-1 accuracy"
TOP1_AGREEMENT = "top-1 agreement with float"
COSINE = "cosine similarity with float x100"


def run_all(runner: Runner, samples, batch: int) -> list[np.ndarray]:
    """Run ``runner`` over every sample of a CalibrationSet in batches; outputs concatenated on axis 0."""
    parts: list[list[np.ndarray]] = []
    for inputs in samples.batches(batch):
        parts.append([np.asarray(o) for o in runner(inputs)])
    if not parts:
        return []
    # Samples fed one at a time as whole inputs (a recurrent state, a scalar): an output without a batch axis
    # (the next state) gets one, so that sample k is row k of every output.
    whole = getattr(samples, "max_batch", 0) == 1
    return [np.stack([p[k] for p in parts]) if whole and any(p[k].shape[:1] != (1,) for p in parts)
            else np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def is_classifier(output: np.ndarray) -> bool:
    """Scores per class: [N, C] floats with C >= 2."""
    return output.ndim == 2 and output.shape[1] >= 2 and np.issubdtype(output.dtype, np.floating)


def top1_accuracy(output: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose arg-max class is the label."""
    return float(np.mean(np.asarray(output).argmax(1) == np.asarray(labels).reshape(-1)))


def top1_agreement(reference: np.ndarray, got: np.ndarray, axis: int = 1) -> float:
    """Fraction of positions along ``axis`` where both arg-maxes agree (per sample; per window for a map)."""
    return float(np.mean(np.asarray(reference).argmax(axis) == np.asarray(got).argmax(axis)))


def _are_probabilities(output: np.ndarray, axis: int) -> bool:
    """Non-negative and summing to 1 along ``axis`` (a softmax already applied)."""
    return bool(np.all(output >= 0) and np.allclose(output.sum(axis), 1.0, atol=1e-3))


def _is_step_classifier(output: np.ndarray) -> bool:
    """[N, T, C] probabilities (a CTC recogniser's, a tagger's): one decision per step, read by its arg-max."""
    if output.ndim != 3 or output.shape[2] < 2 or not np.issubdtype(output.dtype, np.floating):
        return False
    return _are_probabilities(output, axis=2)


def _rows(output: np.ndarray, steps: bool) -> np.ndarray:
    """A step classifier's output as one row per step; any other output as it is."""
    return output.reshape(-1, output.shape[-1]) if steps else output


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each sample (row) of ``a`` with the same row of ``b``; 1 for two equal zero rows."""
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(np.all(a == b, axis=1), 1.0, 0.0))


def _probabilities(logits: np.ndarray) -> np.ndarray:
    """Rows as probabilities: kept when they already are (non-negative, summing to 1), else softmax."""
    logits = logits.astype(np.float64)
    if _are_probabilities(logits, axis=1):
        return logits
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays taken whole."""
    return float(cosine_rows(np.reshape(a, (1, -1)), np.reshape(b, (1, -1)))[0])


def _energy(reference: np.ndarray) -> np.ndarray:
    """Per-sample weights of a cosine: the reference's energy, as a share of the mean (all 1 when equal)."""
    energy = np.sum(reference.reshape(len(reference), -1).astype(np.float64) ** 2, axis=1)
    return energy / np.mean(energy) if np.mean(energy) > 0 else np.ones(len(reference))


def output_cosine(reference: np.ndarray, got: np.ndarray) -> float:
    """Per-sample cosine, averaged with the reference's energy as weights (a detector's map of a scene without
    text is ~0, and its direction means nothing); over all samples at once when each holds at most one value."""
    if reference.ndim == 0 or reference.size <= len(reference):
        return cosine(reference, got)
    return float(np.mean(cosine_rows(reference, got) * _energy(reference)))


# An [N, items, fields] output is a table: every field (a box coordinate, an objectness, a class score) is
# measured on its own scale. A field's scale is floored at this share of the largest field's, so that a class
# that never fires (RMS ~0) does not turn rounding noise into the whole measure (a YOLO head in pixels, boxes
# ~200, still counts its scores ~0.05 at a quarter of their own scale or better).
FIELD_FLOOR = 1e-3
MAX_FIELDS = 256


def field_scale(reference: np.ndarray) -> np.ndarray | None:
    """Per-field divisors (each field's RMS over samples and items, floored) of an [N, items, fields] output with
    at most ``MAX_FIELDS`` fields that are not per-item probabilities; None for any other output.

    Cosine and noise over such a table taken whole see mostly its largest fields: in ddddocr's YOLO head the
    box fields (RMS 0.5-1.1) hide the objectness (RMS 0.09) that decides which anchors fire, and the guard kept
    float the layers that refine boxes while the int8 score tail lost detections (anchor IoU 0.886 against
    0.918 for plain int8). Field by field, each counts alike; a table whose fields share one scale measures the
    same either way (a common factor changes neither cosine nor relative noise)."""
    if reference.ndim != 3 or not 2 <= reference.shape[2] <= MAX_FIELDS or _are_probabilities(reference, axis=2):
        return None  # per-step class probabilities are one kind of quantity, read by their arg-max
    rms = np.sqrt(np.mean(reference.astype(np.float64) ** 2, axis=(0, 1)))
    if not rms.max() > 0:
        return None
    return np.maximum(rms, FIELD_FLOOR * rms.max())


def balanced(reference: np.ndarray, got: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reference, got) with each field divided by the reference's field scale (``field_scale``) for a table
    output; unchanged otherwise."""
    scale = field_scale(reference)
    if scale is None:
        return reference, got
    return reference / scale, got / scale


def relative_error(reference: np.ndarray, got: np.ndarray) -> float:
    """||got - reference|| / ||reference|| (||got|| for a zero reference)."""
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
            if not is_classifier(first):
                raise CalibrationDataError(f"{samples.source}: 'labels' given but the model's first output has shape "
                                           f"{list(first.shape)}, not [N, classes]; drop the labels to measure "
                                           "agreement with the float model")
            if not np.issubdtype(self.labels.dtype, np.integer):
                raise CalibrationDataError(f"{samples.source}: 'labels' must be integer class ids, got dtype "
                                           f"{self.labels.dtype}")
            if self.labels.shape[0] != first.shape[0]:
                raise CalibrationDataError(f"{samples.source}: 'labels' has {self.labels.shape[0]} entries for "
                                           f"{first.shape[0]} samples")
        self.steps = self.labels is None and _is_step_classifier(first)
        self.classifier = is_classifier(_rows(first, self.steps))
        self.probabilities = _probabilities(_rows(first, self.steps)) if self.classifier else None
        if self.labels is not None:
            self.metric = TOP1_ACCURACY
            self.float_score = 100.0 * top1_accuracy(first, self.labels)
        else:
            self.metric = (TOP1_AGREEMENT + (" per step" if self.steps else "")) if self.classifier else COSINE
            self.float_score = 100.0

    def measure(self, runner: Runner) -> dict:
        """Score, drop (points, vs the float model), its 95% interval and error figures of ``runner``."""
        from edgec.compiler.stages.quantize_evidence import bootstrap_interval, wilson

        outputs = run_all(runner, self.samples, self.batch)
        first, ref = outputs[0], self.reference[0]
        fair_pairs = [balanced(r, o) for r, o in zip(self.reference, outputs)]  # a table's scores count as its boxes
        fair_ref, fair = fair_pairs[0]
        cosines = cosine_rows(fair_ref, fair)
        noise = float(np.sum((fair.astype(np.float64) - fair_ref) ** 2) /
                      max(np.sum(fair_ref.astype(np.float64) ** 2), 1e-30))
        n = int(ref.shape[0])
        result = {"metric": self.metric, "samples": n, "float_score": round(self.float_score, 4),
                  "cosine": round(min(output_cosine(*pair) for pair in fair_pairs), 6),
                  "labels": self.labels is not None,
                  "noise": noise, "sqnr_db": round(float(-10 * np.log10(max(noise, 1e-30))), 2),
                  "rel_error": round(max(relative_error(r, o) for r, o in zip(self.reference, outputs)), 6)}
        per_sample = 100.0 * (1.0 - cosines) * (_energy(fair_ref) if ref.ndim > 1 and ref.size > len(ref) else 1.0)
        if self.classifier:  # per step for a step classifier: each step's arg-max is a decision
            chosen, top = _rows(first, self.steps).argmax(1), _rows(ref, self.steps).argmax(1)
            n = len(top)
            agree = int(np.sum(chosen == top))
            low, high = wilson(agree, n)
            result["agreement"] = round(100.0 * agree / n, 4)
            result["flip_interval"] = [round(100.0 * (1 - high), 4), round(100.0 * (1 - low), 4)]
            rows = np.arange(n)
            cost = 100.0 * (self.probabilities[rows, top] - self.probabilities[rows, chosen])
            result["expected_drop"] = round(float(np.mean(cost)), 4)
            result["expected_interval"] = [round(v, 4) for v in bootstrap_interval(cost)]
            per_sample = 100.0 * (chosen != top)
        if self.labels is not None:
            per_sample = 100.0 * ((ref.argmax(1) == self.labels).astype(float) - (first.argmax(1) == self.labels))
            score = 100.0 * top1_accuracy(first, self.labels)
        elif self.classifier:
            score = result["agreement"]
        else:
            score = 100.0 * result["cosine"]
        result["score"] = round(score, 4)
        result["drop"] = round(self.float_score - score, 4)
        if not self.classifier and self.labels is None:
            # The score is the worst output's cosine (corpus models with a state beside their value); the
            # per-sample spread comes from the first output, centred on that score's drop.
            per_sample = per_sample - float(np.mean(per_sample)) + result["drop"]
        result["drop_interval"] = result["flip_interval"] if self.classifier and self.labels is None else [
            round(v, 4) for v in bootstrap_interval(per_sample)]
        return result

    def subset(self, count: int) -> Evaluator:
        """The same measure on the first ``count`` samples (float outputs reused, not recomputed)."""
        part = Evaluator.__new__(Evaluator)
        part.__dict__.update(self.__dict__)
        part.samples = self.samples.subset(0, count)
        part.reference = [r[:count] for r in self.reference]
        part.labels = None if self.labels is None else self.labels[:count]
        rows = count * (self.reference[0].shape[1] if self.steps else 1)
        part.probabilities = None if self.probabilities is None else self.probabilities[:rows]
        if self.labels is not None:
            part.float_score = 100.0 * top1_accuracy(part.reference[0], part.labels)
        return part

    def summary(self, result: dict) -> str:
        """One line for the report, e.g. 'top-1 accuracy 97.41 -> 97.22 (-0.19 points) on 540 samples'."""
        return (f"{result['metric']} {result['float_score']:.2f} -> {result['score']:.2f} "
                f"({-result['drop']:+.2f} points) on {result['samples']} samples; relative error "
                f"{result['rel_error']:.4f}, cosine {result['cosine']:.5f}")


def score(outputs: list[np.ndarray], labels: np.ndarray | None,
          reference: list[np.ndarray] | None) -> tuple[float | None, str]:
    """(points 0..100, metric) of outputs already computed, by the rule ``Evaluator`` measures with: top-1
    accuracy with labels (a classifier), else top-1 agreement with the ``reference`` (float) outputs for a
    classifier, else 100 x the worst output's cosine with them; (None, "") with neither labels nor reference."""
    first = outputs[0]
    if labels is not None and is_classifier(first):
        return 100.0 * top1_accuracy(first, labels), TOP1_ACCURACY
    if reference is None:
        return None, ""
    if is_classifier(first):
        return 100.0 * top1_agreement(reference[0], first), TOP1_AGREEMENT
    return 100.0 * min(output_cosine(*balanced(r, o)) for r, o in zip(reference, outputs)), COSINE
