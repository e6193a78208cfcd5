"""Front-ends: each lowers one kind of source model to the ONNX IR and keeps a way to run the source.

``lower(spec, input_shapes)`` picks the front-end from what the file is (its content, not only its name):
ONNX, Keras (.keras, .h5, SavedModel directory), PyTorch (torch.export .pt2, TorchScript, ``file.py:factory``).
``FRONTENDS`` (an ``edgec.registry.Registry``) maps each kind to ``lower_<x>(spec, kind, input_shapes,
trust_source)``.
Pickled whole-model ``.pt``/``.pth`` files are refused: loading one runs arbitrary code. Other model files are
checked for constructs that run code before their framework loads them (``_safety``) unless ``trust_source``.
``file.py:factory`` / ``module:factory`` (``edgec.source_spec``) run the user's code by design; such a spec is taken only
when written in exactly that form, never as a fallback for a path that does not exist.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from edgec.errors import InputError, UnsafeInputError, UsageError
from edgec.registry import Registry
from edgec.source_spec import parse_source_spec

__all__ = ["FRONTENDS", "ONLY_INPUT", "SourceModel", "detect_kind", "lower", "parse_input_shapes", "resolve_input_shapes",
           "shape_hint"]

Runner = Callable[[list[np.ndarray]], list[np.ndarray]]

# Source kinds (``detect_kind``) -> their front-end, imported only for the kind compiled.
FRONTENDS = Registry("front-end")
FRONTENDS.add("onnx", "edgec.compiler.frontends.onnx:lower_onnx")
for _kind in ("keras", "keras-h5", "savedmodel"):
    FRONTENDS.add(_kind, "edgec.compiler.frontends.keras:lower_keras")
for _kind in ("torch-export", "torchscript", "torch-factory"):
    FRONTENDS.add(_kind, "edgec.compiler.frontends.pytorch:lower_pytorch")


@dataclass
class SourceModel:
    """A source model lowered to the IR, with the framework's own runner for verification."""

    path: str
    kind: str  # onnx | keras | keras-h5 | savedmodel | torch-export | torchscript | torch-factory
    model: ir.Model
    reference: Runner | None  # runs the source framework on inputs in IR input order
    layouts: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    framework_model: Any = None  # the loaded Keras/torch model, for emitters that convert from it directly
    # Concrete shapes to generate verification inputs with (from --input-shape or the source's example inputs).
    example_shapes: dict[str, list[int]] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [v.name for v in self.model.graph.inputs]


_DIM = r"(?:\d+|-1|[Nn?])"
_SHAPE_RE = re.compile(rf"^(?:([^=]+)=)?({_DIM}(?:x{_DIM})*)$")
# The key of a shape given without a name (``--input-shape 1x3x224x224``): the model's one input.
ONLY_INPUT = ""


def parse_input_shapes(values: tuple[str, ...] | list[str]) -> dict[str, list[int | None]]:
    """``NAME=1x3x224x224`` (repeatable) -> {NAME: [1, 3, 224, 224]}; ``N``, ``-1`` or ``?`` -> None (left
    dynamic); a bare ``1x3x224x224`` is keyed ``ONLY_INPUT`` (``resolve_input_shapes`` names it)."""
    shapes: dict[str, list[int | None]] = {}
    for value in values:
        match = _SHAPE_RE.match(value.strip())
        if not match:
            raise UsageError(f"--input-shape {value!r}: expected [NAME=]DxDxD... with positive integers (N or -1 "
                             "for a dimension left dynamic), e.g. input=1x3x224x224")
        dims = [int(d) if d.isdigit() else None for d in match.group(2).split("x")]
        if any(d is not None and d <= 0 for d in dims):
            raise UsageError(f"--input-shape {value!r}: dimensions must be positive (N or -1 leaves one dynamic)")
        name = (match.group(1) or ONLY_INPUT).strip()
        if name in shapes:
            raise UsageError(f"--input-shape: {name or 'a shape without a name'!r} given twice")
        shapes[name] = dims
    if ONLY_INPUT in shapes and len(shapes) > 1:
        raise UsageError("--input-shape: a shape without NAME= is for a one-input model; name every input when "
                         "giving several shapes")
    return shapes


def resolve_input_shapes(shapes: dict, names: list[str], where: str) -> dict:
    """Shapes keyed by the model's input names: a bare shape goes to the one input; an unknown name is refused
    with the real ones listed."""
    shapes = dict(shapes or {})
    if ONLY_INPUT in shapes:
        if len(names) != 1:
            raise UsageError(f"{where}: --input-shape without NAME= needs a one-input model; this one has inputs "
                             f"{', '.join(names)}: give NAME=DxD... for each")
        shapes = {names[0]: shapes.pop(ONLY_INPUT)}
    unknown = [n for n in shapes if n not in names]
    if unknown:
        raise UsageError(f"{where}: --input-shape names {unknown[0]!r}, but the model's inputs are "
                         f"{', '.join(names)}")
    return shapes


def shape_hint(name: str, dims: list, only_input: bool = False) -> str:
    """A usable ``--input-shape`` for an input whose ``dims`` (None = dynamic) are not all known: the fixed dims
    kept, batch 1, image sides 224 (rank 4 with 1, 3 or 4 channels first or last), other sizes 128."""
    dims = list(dims or [])
    image = len(dims) == 4 and (dims[1] in (1, 3, 4) or dims[3] in (1, 3, 4))
    channel_axis = 1 if image and dims[1] in (1, 3, 4) else 3
    example = []
    for axis, dim in enumerate(dims):
        if dim is not None:
            example.append(str(dim))
        elif axis == 0:
            example.append("1")
        else:
            example.append("224" if image and axis != channel_axis else "128")
    text = "x".join(example)
    return f"--input-shape {text if only_input else f'{name}={text}'}"


def _zip_kind(path: Path) -> str:
    names = zipfile.ZipFile(path).namelist()
    if any(n.endswith("/archive_format") or n == "archive_format" for n in names):
        return "torch-export"
    if any("/code/" in n or n.startswith("code/") for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        raise UnsafeInputError(
            f"{path}: a pickled PyTorch model (torch.save of a whole module); loading it would run arbitrary "
            "code, so edgec refuses it. Give a torch.export file instead (torch.export.save(torch.export.export("
            "model, example_inputs), 'model.pt2')), a TorchScript file, or 'file.py:factory' returning the nn.Module")
    if any(n.endswith("saved_model.pb") for n in names):
        raise InputError(f"{path}: a zipped SavedModel; unzip it and give the directory")
    return "zip"


def detect_kind(spec: str) -> str:
    """What kind of source ``spec`` names; raises InputError for missing files and unknown kinds."""
    path, source = Path(spec), parse_source_spec(spec)
    if source.is_function:
        if source.kind == "file" and not Path(source.location).is_file():
            raise InputError(f"{source.location}: file not found (from {spec!r})")
        return "torch-factory"
    if not path.exists():
        raise InputError(f"{spec}: no such file or directory")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "savedmodel"
        raise InputError(f"{path}: a directory but not a SavedModel (no saved_model.pb); give a model file")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(b"\x89HDF"):
        return "keras-h5"
    if head.startswith(b"PK"):
        kind = _zip_kind(path)
        if kind == "zip" and path.suffix == ".keras":
            return "keras"
        if kind != "zip":
            return kind
    if path.suffix == ".onnx" or _looks_like_onnx(path):
        return "onnx"
    raise InputError(
        f"{path}: not a model edgec can read (expected .onnx, .keras, .h5, a SavedModel directory, a "
        "torch.export .pt2, a TorchScript file, or file.py:factory)"
    )


def _looks_like_onnx(path: Path) -> bool:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # any decode failure means "not ONNX" here
        return False
    return bool(proto.graph.node)


def lower(spec: str, input_shapes: dict[str, list[int]] | None = None, trust_source: bool = False) -> SourceModel:
    """Lower the source model named by ``spec`` to the IR; ``trust_source`` lets the file's own code run."""
    kind = detect_kind(spec)
    return FRONTENDS.get(kind)(spec, kind, input_shapes or {}, trust_source)
