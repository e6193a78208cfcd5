"""Accuracy of a bundle measured on the host with the bundle's own runtime and file (used by ``edgec sweep``).

Samples come from an ``.npz`` (one array per model input, named after it, samples on axis 0, optional integer
``labels``), in the source model's layout; they are converted to each bundle's layout and dtype with the io
signature the emitter recorded (``permutation``, int8 ``quantization`` scale/zero point), so ONNX and TFLite,
float and quantized variants are scored on the same data the same way (``edgec.compiler.accuracy.score``: the
compile report's measure).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgec.bundle import from_model_layout, to_model_layout
from edgec.errors import CalibrationDataError

__all__ = ["MAX_SAMPLES", "load_eval", "run_bundle"]

MAX_SAMPLES = 1000


def load_eval(path: str | Path, input_names: list[str]) -> tuple[list[np.ndarray], np.ndarray | None]:
    """(one array per input in ``input_names`` order, labels or None) from an .npz, at most MAX_SAMPLES, read
    with the calibration loader's bounded reader (``edgec.compiler.calibration.open_npz``)."""
    from edgec.compiler.calibration import open_npz

    members, labels = open_npz(Path(path))
    if len(input_names) == 1 and len(members) == 1:  # one array for a one-input model: its name does not matter
        members = {input_names[0]: next(iter(members.values()))}
    missing = [n for n in input_names if n not in members]
    if missing:
        raise CalibrationDataError(f"{path}: no array for input {missing[0]!r} (has {', '.join(sorted(members))}); "
                                   "name each array after a model input")
    arrays = [members[n].rows(0, min(MAX_SAMPLES, members[n].shape[0])) for n in input_names]
    return arrays, (labels[:MAX_SAMPLES] if labels is not None else None)




def _check_shapes(arrays: list[np.ndarray], entries: list[dict], source: str) -> None:
    for array, entry in zip(arrays, entries):
        perm = entry.get("permutation")
        shape = [array.shape[p] for p in perm] if perm and len(perm) == array.ndim else list(array.shape)
        wanted = entry.get("shape") or []
        if len(shape) != len(wanted) or any(w not in (None, -1) and w != s for w, s in zip(wanted[1:], shape[1:])):
            raise CalibrationDataError(
                f"{source}: samples of input {entry['name']!r} have shape {list(array.shape)}, the model takes "
                f"{['?' if w is None else w for w in wanted]} (samples on the first axis); write the .npz for "
                "this model's input")


def run_bundle(bundle, arrays: list[np.ndarray], source: str = "evaluation data") -> list[np.ndarray]:
    """Run ``bundle`` on source-layout ``arrays`` (manifest input order); outputs in manifest order, float."""
    from edgec.runtimes import load_runtime, runtime_for_format

    _check_shapes(arrays, bundle.inputs, source)
    session = load_runtime(runtime_for_format(bundle.format)).load(bundle.model_bytes())
    ins, outs = bundle.inputs, bundle.outputs
    manifest_names = [e["name"] for e in ins]
    session_names = list(getattr(session, "input_names", manifest_names))
    # TFLite tensors carry their own names; the manifest already lists them in the interpreter's order.
    order = [manifest_names.index(n) for n in session_names] if sorted(session_names) == sorted(manifest_names) \
        else list(range(len(ins)))
    fixed = any((e.get("shape") or [None])[0] not in (None, -1) for e in ins)
    step = 1 if fixed else 64
    parts: list[list[np.ndarray]] = []
    for start in range(0, len(arrays[0]), step):
        feeds = [to_model_layout(arrays[k][start:start + step], ins[k]) for k in order]
        produced = session.run(feeds)
        names = getattr(session, "output_names", [e["name"] for e in outs])
        by_name = dict(zip(names, produced))
        parts.append([from_model_layout(by_name.get(e["name"], produced[j]), e) for j, e in enumerate(outs)])
    return [np.concatenate([p[k] for p in parts]) for k in range(len(outs))]
