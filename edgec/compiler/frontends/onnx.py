"""ONNX front-end: load (with external data), check, normalise the opset, fix requested input shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import version_converter

from edgec import ir as edgec_ir
from edgec.compiler.frontends import SourceModel, resolve_input_shapes
from edgec.errors import SourceModelError

__all__ = ["lower_onnx", "ort_runner", "unsupported_nodes"]


def unsupported_nodes(proto: onnx.ModelProto) -> list[str]:
    """Nodes of the standard domains whose op has no ONNX schema at the model's opset."""
    opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    problems = []
    for node in proto.graph.node:
        domain = node.domain or "ai.onnx"
        if domain not in ("ai.onnx", "ai.onnx.ml"):
            continue
        try:
            onnx.defs.get_schema(node.op_type, opsets.get(domain, 1), "" if domain == "ai.onnx" else domain)
        except onnx.defs.SchemaError:
            problems.append(f"node {node.name or '(unnamed)'!r} op {node.op_type!r}")
    return problems


def ort_runner(model_bytes: bytes, where: str):
    """A function running the model with onnxruntime; errors name ``where`` and the runtime's reason."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors have no useful common base class
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceModelError(f"{where}: onnxruntime cannot run this model: {reason}") from None
    names = [i.name for i in session.get_inputs()]

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        return session.run(None, dict(zip(names, inputs)))

    return run


def _dynamic_dims(proto: onnx.ModelProto) -> list[str]:
    """Dimensions exporters write as ``dim_value: -1`` or ``0`` (older paddle2onnx, some converters) are dynamic:
    give them a name (``dim_param``) as every other dynamic dimension has; value_info shapes holding them are
    dropped (shape inference makes them again)."""
    changed = []
    for value in [*proto.graph.input, *proto.graph.output]:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value <= 0:
                written = dim.dim_value
                dim.Clear()
                dim.dim_param = f"{value.name}_dim{axis}"
                changed.append(f"{value.name}[{axis}] = {written}")
    kept = [v for v in proto.graph.value_info
            if not any(d.HasField("dim_value") and d.dim_value <= 0 for d in v.type.tensor_type.shape.dim)]
    if len(kept) != len(proto.graph.value_info):
        del proto.graph.value_info[:]
        proto.graph.value_info.extend(kept)
    if not changed:
        return []
    return [f"dimensions written as -1/0 read as dynamic: {', '.join(changed[:6])}"
            + (f" (and {len(changed) - 6} more)" if len(changed) > 6 else "")]


def _check_shapes(proto: onnx.ModelProto, input_shapes: dict, path: Path) -> dict:
    """``input_shapes`` keyed by the real input names, checked against the model's ranks and fixed dims."""
    weights = {t.name for t in proto.graph.initializer}
    graph_inputs = {i.name: i for i in proto.graph.input if i.name not in weights}
    input_shapes = resolve_input_shapes(input_shapes, list(graph_inputs), str(path))
    for name, dims in input_shapes.items():
        shape = graph_inputs[name].type.tensor_type.shape
        if len(shape.dim) != len(dims):
            raise SourceModelError(f"{path}: --input-shape {name} has {len(dims)} dimensions, the model's "
                                   f"input has {len(shape.dim)}")
        for dim, value in zip(shape.dim, dims):
            if value is not None and dim.HasField("dim_value") and dim.dim_value != value:
                raise SourceModelError(f"{path}: --input-shape {name} dimension {value} conflicts with the "
                                       f"model's fixed {dim.dim_value}")
    return input_shapes


def _initializers_out_of_inputs(proto: onnx.ModelProto) -> list[str]:
    """IR < 4 lists every weight as a graph input too; weights are not inputs a device feeds."""
    weights = {t.name for t in proto.graph.initializer}
    kept = [i for i in proto.graph.input if i.name not in weights]
    if len(kept) == len(proto.graph.input):
        return []
    removed = len(proto.graph.input) - len(kept)
    del proto.graph.input[:]
    proto.graph.input.extend(kept)
    proto.ir_version = max(proto.ir_version, 4)
    return [f"{removed} initializers removed from the graph inputs (IR version raised to {proto.ir_version})"]


def lower_onnx(spec: str, kind: str, input_shapes: dict[str, list[int]], trust_source: bool = False) -> SourceModel:
    """An ONNX file as the IR (``kind`` is "onnx"; an ONNX file runs no code, so ``trust_source`` changes nothing)."""
    path = Path(spec)
    proto = edgec_ir.load_proto(path)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise SourceModelError(f"{path}: invalid ONNX model: {first}") from None
    bad = unsupported_nodes(proto)
    if bad:
        raise SourceModelError(f"{path}: {bad[0]} is not a known ONNX operator at this opset"
                               f"{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}; "
                               "replace it or export with standard ops")
    notes = _dynamic_dims(proto)
    input_shapes = _check_shapes(proto, input_shapes, path)
    reference = ort_runner(proto.SerializeToString(), str(path))
    notes += _initializers_out_of_inputs(proto)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < edgec_ir.IR_OPSET:
        try:
            proto = version_converter.convert_version(proto, edgec_ir.IR_OPSET)
        except Exception as exc:  # the converter raises bare RuntimeErrors; name the step
            raise SourceModelError(f"{path}: cannot upgrade opset {opset} to {edgec_ir.IR_OPSET}: "
                                   f"{str(exc).splitlines()[0]}") from None
        notes.append(f"opset upgraded from {opset} to {edgec_ir.IR_OPSET}")
    return SourceModel(path=str(path), kind="onnx", model=edgec_ir.from_proto(proto), reference=reference,
                       notes=notes, example_shapes=dict(input_shapes))
