"""Front-ends: each lowers one kind of source model to the ONNX IR and keeps a way to run the source.

``lower(spec, input_shapes)`` picks the front-end from what the file is (its content, not only its name):
ONNX, Keras (.keras, .h5, SavedModel directory), PyTorch (torch.export .pt2, TorchScript, ``file.py:factory``).
Pickled whole-model ``.pt``/``.pth`` files are refused: loading one runs arbitrary code. Other model files are
checked for constructs that run code before their framework loads them (``_safety``) unless ``trust_source``.
``file.py:factory`` / ``module:factory`` (``code_spec``) run the user's code by design; such a spec is taken only
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

__all__ = ["SourceModel", "code_spec", "detect_kind", "lower", "parse_input_shapes"]

Runner = Callable[[list[np.ndarray]], list[np.ndarray]]


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


_SHAPE_RE = re.compile(r"^([^=]+)=((?:\d+|\?)(?:x(?:\d+|\?))*)$")


def parse_input_shapes(values: tuple[str, ...] | list[str]) -> dict[str, list[int]]:
    """``NAME=1x3x224x224`` (repeatable) -> {NAME: [1, 3, 224, 224]}."""
    shapes: dict[str, list[int]] = {}
    for value in values:
        match = _SHAPE_RE.match(value.strip())
        if not match:
            raise UsageError(f"--input-shape {value!r}: expected NAME=DxDxD... with positive integers, "
                             "e.g. input=1x3x224x224")
        dims = [int(d) for d in match.group(2).split("x")]
        if any(d <= 0 for d in dims):
            raise UsageError(f"--input-shape {value!r}: dimensions must be positive")
        if match.group(1) in shapes:
            raise UsageError(f"--input-shape: {match.group(1)!r} given twice")
        shapes[match.group(1)] = dims
    return shapes


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


_CODE_SPEC_RE = re.compile(r"(?P<target>[^:]+\.py|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<func>[A-Za-z_]\w*)")


def code_spec(spec: str) -> tuple[str, str] | None:
    """``(file.py or module, function)`` when ``spec`` is written as ``file.py:function`` or ``module:function``
    and names no existing file; None otherwise (it is then a path, and a missing one is an error)."""
    match = _CODE_SPEC_RE.fullmatch(spec)
    if match is None or Path(spec).exists():
        return None
    return match.group("target"), match.group("func")


def detect_kind(spec: str) -> str:
    """What kind of source ``spec`` names; raises InputError for missing files and unknown kinds."""
    path = Path(spec)
    code = code_spec(spec)
    if code is not None:
        if code[0].endswith(".py") and not Path(code[0]).is_file():
            raise InputError(f"{code[0]}: file not found (from {spec!r})")
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
    input_shapes = input_shapes or {}
    if kind == "onnx":
        from edgec.compiler.frontends.onnx import lower_onnx

        return lower_onnx(Path(spec), input_shapes)
    if kind in ("keras", "keras-h5", "savedmodel"):
        from edgec.compiler.frontends.keras import lower_keras

        return lower_keras(Path(spec), kind, input_shapes, trust_source)
    from edgec.compiler.frontends.pytorch import lower_pytorch

    return lower_pytorch(spec, kind, input_shapes, trust_source)
