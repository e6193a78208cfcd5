"""The in-memory IR (an onnx-ir ``Model``) and its boundary with ONNX protos and files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from edgec.errors import SourceModelError

__all__ = [
    "DTYPE_NAMES",
    "from_proto",
    "io_signature",
    "load_proto",
    "save",
    "to_proto",
]

# Opset the IR is normalised to: recent enough for every pass and both converters.
IR_OPSET = 18
_TWO_GB = 2 * 1024**3 - 1


def load_proto(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX file with its external data; errors name the file and say what is wrong."""
    path = Path(path)
    try:
        proto = onnx.load(str(path), load_external_data=True)
    except FileNotFoundError as exc:
        raise SourceModelError(f"{path}: an external-data file it references is missing ({exc.filename})") from None
    except Exception as exc:  # protobuf raises DecodeError/RuntimeWarning-ish errors with no common base
        raise SourceModelError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc}); "
                               "re-export it or check the file is complete") from None
    if not proto.graph.node and not proto.graph.output:
        raise SourceModelError(f"{path}: ONNX file holds no graph (empty or corrupt); re-export it")
    return proto


def from_proto(proto: onnx.ModelProto) -> ir.Model:
    return ir.from_proto(proto)


def to_proto(model: ir.Model) -> onnx.ModelProto:
    return ir.to_proto(model)


def save(model: ir.Model, path: str | Path) -> None:
    """Write one self-contained .onnx file (external data only past protobuf's 2 GB limit)."""
    proto = to_proto(model)
    path = Path(path)
    if proto.ByteSize() > _TWO_GB:
        onnx.save(proto, str(path), save_as_external_data=True, location=path.name + ".data")
    else:
        path.write_bytes(proto.SerializeToString(deterministic=True))


DTYPE_NAMES = {
    ir.DataType.FLOAT: "float32", ir.DataType.FLOAT16: "float16", ir.DataType.DOUBLE: "float64",
    ir.DataType.INT8: "int8", ir.DataType.UINT8: "uint8", ir.DataType.INT16: "int16",
    ir.DataType.INT32: "int32", ir.DataType.INT64: "int64", ir.DataType.BOOL: "bool",
}


def _value_signature(value: ir.Value, layout: str) -> dict:
    dtype = value.dtype
    if dtype not in DTYPE_NAMES:
        raise SourceModelError(f"tensor {value.name!r}: unsupported dtype {dtype}; edgec handles "
                               f"{', '.join(sorted(set(DTYPE_NAMES.values())))}")
    shape = [d if isinstance(d, int) else None for d in value.shape] if value.shape is not None else None
    return {"name": value.name, "shape": shape, "dtype": DTYPE_NAMES[dtype], "layout": layout}


def io_signature(model: ir.Model, layouts: dict[str, str] | None = None) -> dict:
    """Names, shapes (None for a dynamic dimension), dtypes and layouts of the graph inputs and outputs."""
    layouts = layouts or {}
    return {
        "inputs": [_value_signature(v, layouts.get(v.name, _default_layout(v))) for v in model.graph.inputs],
        "outputs": [_value_signature(v, layouts.get(v.name, _default_layout(v))) for v in model.graph.outputs],
    }


def _default_layout(value: ir.Value) -> str:
    rank = len(value.shape) if value.shape is not None else 0
    return {2: "NC", 3: "NCW", 4: "NCHW", 5: "NCDHW"}.get(rank, "")


def numpy_dtype(name: str) -> np.dtype:
    return np.dtype(name)
