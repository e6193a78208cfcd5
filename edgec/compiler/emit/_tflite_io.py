"""The emitted .tflite seen from the IR: io signature with layouts, LiteRT runner, layout/dtype converters.

TFLite orders its input and output tensors its own way; the flatbuffer's ``serving_default`` signature maps the
IR's names to tensor indices, and the io signature lists tensors in the interpreter's order (the order the device
feeds them). Each entry records the model's shape, dtype and layout, the IR's layout (``source_layout``), the
permutation that takes an IR-layout array to the model's layout, and for integer tensors the scale and zero point.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edgec.bundle import from_model_layout, to_model_layout
from edgec.compiler.emit import EmittedModel
from edgec.runtimes import litert

__all__ = ["agreement", "tf_name", "wrap"]


def _describe(path: Path) -> tuple[list, list, dict, dict]:
    """Input and output details in interpreter order, and {name: tensor index} of the signature's inputs and
    outputs."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    signatures = interpreter._get_full_signature_list()
    if not signatures:  # some onnx2tf conversions carry no signature def: the caller matches by position
        return interpreter.get_input_details(), interpreter.get_output_details(), None, None
    signature = signatures.get("serving_default") or next(iter(signatures.values()))
    return (interpreter.get_input_details(), interpreter.get_output_details(), signature["inputs"],
            signature["outputs"])


def _positional(details: list[dict], metas: list[dict], kind: str, path: Path) -> dict:
    """{IR name: tensor index} for a model without a signature: only unambiguous with one tensor."""
    if len(details) != 1 or len(metas) != 1:
        from edgec.errors import CompileError

        raise CompileError(f"{path.name}: the converted TFLite model has no signature to match its {len(details)} "
                           f"{kind}s to the ONNX graph's {len(metas)}; use --format onnx for this model")
    return {tf_name(metas[0]["name"]): details[0]["index"]}


def tf_name(name: str) -> str:
    """TensorFlow accepts ``[A-Za-z0-9.][A-Za-z0-9_.\\-/]*`` as a tensor name: the IR name made into one."""
    clean = re.sub(r"[^A-Za-z0-9_.\-/]", "_", name)
    return clean if re.match(r"[A-Za-z0-9.]", clean) else f"t{clean}"


def _entry(meta: dict, detail: dict, perm: list[int]) -> dict:
    source_layout = meta.get("layout") or ""
    layout = "".join(source_layout[p] for p in perm) if len(source_layout) == len(perm) else source_layout
    entry = {"name": meta["name"], "shape": [int(d) for d in detail["shape"]],
             "dtype": np.dtype(detail["dtype"]).name, "layout": layout, "source_layout": source_layout,
             "permutation": list(perm)}
    scale, zero_point = detail["quantization"]
    if np.issubdtype(np.dtype(detail["dtype"]), np.integer) and scale:
        entry["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
    return entry


def _order(details: list[dict], indices: dict, metas: list[dict], kind: str) -> list[int]:
    """For each interpreter tensor, the position of the IR tensor it holds."""
    by_index = {index: name for name, index in indices.items()}
    ir_pos = {tf_name(m["name"]): k for k, m in enumerate(metas)}
    order = []
    for detail in details:
        name = by_index.get(detail["index"])
        if name not in ir_pos:
            raise RuntimeError(f"TFLite {kind} tensor {detail['name']!r} has no IR counterpart")
        order.append(ir_pos[name])
    return order




def wrap(path: Path, io: dict, input_perms: list[list[int]], output_perms: list[list[int]],
         threads: int | None) -> EmittedModel:
    """The EmittedModel for ``path``; ``io`` is the IR's io signature, perms are IR layout -> model layout."""
    session = litert.load(path, threads=threads)
    in_details, out_details, in_idx, out_idx = _describe(path)
    if in_idx is None:
        in_idx = _positional(in_details, io["inputs"], "input", path)
        out_idx = _positional(out_details, io["outputs"], "output", path)
    in_order = _order(in_details, in_idx, io["inputs"], "input")
    out_order = _order(out_details, out_idx, io["outputs"], "output")
    inputs = [_entry(io["inputs"][k], d, input_perms[k]) for k, d in zip(in_order, in_details)]
    outputs = [_entry(io["outputs"][k], d, output_perms[k]) for k, d in zip(out_order, out_details)]

    def to_model(arrays: list) -> list:
        return [to_model_layout(arrays[k], entry) for k, entry in zip(in_order, inputs)]

    def from_model(arrays: list) -> list:
        result = [None] * len(arrays)
        for k, entry, array in zip(out_order, outputs, arrays):
            result[k] = from_model_layout(array, entry)
        return result

    return EmittedModel(model_file=path.name, format="tflite", runtime="litert",
                        io={"inputs": inputs, "outputs": outputs}, runner=session.run, to_model=to_model,
                        from_model=from_model)


def agreement(float_model, emitted: EmittedModel, input_sets: list, names: list[str]) -> dict:
    """How far the emitted model is from the float IR (onnxruntime) on the verification/calibration inputs:
    worst relative error per output, and top-1 agreement for outputs shaped (batch, classes)."""
    from edgec.compiler import verify
    from edgec.compiler.accuracy import top1_agreement

    reference = verify.ir_runner(float_model, "float IR")
    worst = {n: 0.0 for n in names}
    same = {n: [0, 0] for n in names}
    for inputs in input_sets:
        want = reference(inputs)
        got = emitted.from_model(emitted.runner(emitted.to_model(inputs)))
        for record, name, a, b in zip(verify.compare(want, got, names), names, want, got):
            worst[name] = max(worst[name], record["rel_diff"])
            if np.ndim(a) == 2 and np.shape(a)[1] > 1 and np.shape(a) == np.shape(b):
                same[name][0] += top1_agreement(a, b) * np.shape(a)[0]
                same[name][1] += int(np.shape(a)[0])
    outputs = []
    for name in names:
        record = {"output": name, "max_rel_diff": float(worst[name])}
        if same[name][1]:
            record["top1_agreement"] = same[name][0] / same[name][1]
        outputs.append(record)
    return {"against": "float IR (onnxruntime)", "outputs": outputs,
            "samples": sum(int(s[0].shape[0]) if s and np.ndim(s[0]) else 1 for s in input_sets)}

