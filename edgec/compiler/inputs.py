"""The inputs every verification runs on: calibration samples when given, else seeded generated inputs, plus a
second size when the model keeps dynamic dimensions.

``load_calibration(source, io, options)`` loads ``--calibration`` once per compile (the ``CompileState`` holds it);
``verification_inputs(source, io, options, samples)`` returns the input sets (the first becomes the bundle's
reference inputs, which the agent also benchmarks with) and a report entry saying what they were. Missing
shapes of dynamic inputs come from ``--input-shape``, else from the calibration data; an input still unsized is
refused with one line naming it and a usable ``--input-shape``.
"""

from __future__ import annotations

import numpy as np

from edgec.compiler.frontends import SourceModel, shape_hint
from edgec.errors import UsageError

__all__ = ["example_shape", "generate_inputs", "load_calibration", "second_size", "verification_inputs"]

# Calibration samples the verification runs on at most (on top of the reference sample).
VERIFY_SAMPLES = 16


def example_shape(meta: dict, example: list | None) -> list[int] | None:
    """The concrete shape to feed input ``meta`` (an io-signature entry): ``example`` (from --input-shape or
    the data) over the declared shape, a dynamic batch as 1; None when a dimension stays unknown."""
    declared = list(meta["shape"] or [])
    example = list(example or [])
    if example and len(example) != len(declared):
        declared = [None] * len(example)
    shape = []
    for axis, dim in enumerate(declared):
        given = example[axis] if axis < len(example) else None
        size = given if given is not None else dim
        shape.append(1 if size is None and axis == 0 else size)
    return None if None in shape else shape


def _random(rng, shape: list[int], dtype: str) -> np.ndarray:
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    return rng.integers(0, 10, shape).astype(dtype)


def generate_inputs(inputs: list[dict], example_shapes: dict[str, list], seed: int = 0,
                    batch: int | None = None) -> list[np.ndarray]:
    """Seeded inputs for io-signature entries; dynamic dimensions come from ``example_shapes``.

    Raises UsageError naming every input left unsized, with a usable ``--input-shape`` for each.
    """
    shapes = [example_shape(meta, example_shapes.get(meta["name"])) for meta in inputs]
    unsized = [meta for meta, shape in zip(inputs, shapes) if shape is None]
    if unsized:
        only = len(inputs) == 1
        hints = " ".join(shape_hint(m["name"], m["shape"], only) for m in unsized)
        described = ", ".join(f"{m['name']!r} {['N' if d is None else d for d in m['shape']]}" for m in unsized)
        raise UsageError(f"input{'s' if len(unsized) > 1 else ''} {described} "
                         f"{'have' if len(unsized) > 1 else 'has'} dynamic dimensions and no size to verify "
                         f"with: give {hints} (the sizes your data have), or --calibration data to take "
                         "the shapes from")
    rng = np.random.default_rng(seed)
    arrays = []
    for meta, shape in zip(inputs, shapes):
        if batch is not None and shape and (not meta["shape"] or meta["shape"][0] is None):
            shape[0] = batch
        arrays.append(_random(rng, shape, meta["dtype"]))
    return arrays


def _bigger(size: int) -> int:
    for step in (32, 8):
        if size % step == 0:
            return size + step
    return size + 1


def second_size(inputs: list[dict], first: list[np.ndarray]) -> list[list[int]] | None:
    """Shapes that change every dynamic dimension of ``first`` (batch 2, other sizes one stride larger), or None
    when the model has no dynamic dimension."""
    shapes, changed = [], False
    for meta, array in zip(inputs, first):
        shape = list(array.shape)
        for axis, dim in enumerate(meta["shape"] or []):
            if dim is None and axis < len(shape):
                shape[axis] = 2 if axis == 0 else _bigger(shape[axis])
                changed = True
        shapes.append(shape)
    return shapes if changed else None


def _samples_shapes(source: SourceModel, io: dict, samples) -> None:
    """Fill the example shape of every input left with dynamic dimensions from the first calibration sample."""
    first = next(samples.batches(1, 1))
    for meta, array in zip(io["inputs"], first):
        if example_shape(meta, source.example_shapes.get(meta["name"])) is None:
            source.example_shapes[meta["name"]] = list(array.shape)


def _second_set(source: SourceModel, io: dict, first: list[np.ndarray], seed: int) -> tuple[list | None, str]:
    """A generated set at a second size (inputs without dynamic dims keep the first set's arrays), if the source
    model runs on it."""
    shapes = second_size(io["inputs"], first)
    if shapes is None:
        return None, "no dynamic dimensions"
    rng = np.random.default_rng(seed + 1)
    arrays = [array if list(array.shape) == shape else _random(rng, shape, meta["dtype"])
              for meta, array, shape in zip(io["inputs"], first, shapes)]
    described = ", ".join(f"{m['name']} {'x'.join(map(str, s)) or 'scalar'}" for m, s in zip(io["inputs"], shapes)
                          if None in (m["shape"] or []))
    try:
        source.reference(arrays)
    except Exception as exc:  # the source framework's own refusal: any exception type
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        return None, f"dynamic dimensions checked at one size only: the source model does not run at {described} " \
                     f"({reason})"
    return arrays, f"dynamic dimensions also checked at a second size ({described}, generated)"


def load_calibration(source: SourceModel, io: dict, options):
    """``--calibration`` as a CalibrationSet (None without it); inputs left with dynamic dimensions take their
    example shapes from its first sample."""
    if not options.calibration:
        return None
    from edgec.compiler.calibration import load_samples

    samples = load_samples(options.calibration, io["inputs"], preprocess=options.preprocess)
    _samples_shapes(source, io, samples)
    return samples


def verification_inputs(source: SourceModel, io: dict, options, samples) -> tuple[list, dict]:
    """(input sets, report entry): the calibration ``samples`` (``load_calibration``) when given, else generated."""
    if samples is not None:
        # A model with a fixed batch is fed batches of that size (rows of whole inputs: one at a time).
        fixed = [i["shape"][0] for i in io["inputs"] if i["shape"] and i["shape"][0] is not None]
        first = max(fixed) if fixed else 1
        sets = [next(samples.batches(first, first))]
        rest = samples.subset(min(first, samples.max_batch or first), len(samples))
        sets.extend(rest.batches(size=first if fixed else 8, limit=VERIFY_SAMPLES))
        report = {"source": f"calibration samples ({options.calibration})",
                  "samples": min(len(samples), VERIFY_SAMPLES + 1)}
    else:
        sets = [generate_inputs(io["inputs"], source.example_shapes, options.seed)]
        report = {"source": f"generated (seeded {options.seed}): no --calibration data, so outputs are compared "
                            "on random inputs only", "samples": 1}
    second, note = _second_set(source, io, sets[0], options.seed)
    if second is not None:
        sets.append(second)
    for meta, array in zip(io["inputs"], sets[0]):  # the sizes a format with fixed shapes (TFLite) pins
        source.example_shapes[meta["name"]] = list(array.shape)
    report["shapes"] = [[list(a.shape) for a in s] for s in ([sets[0]] + ([second] if second is not None else []))]
    report["dynamic"] = note
    return sets, report
