"""PyTorch front-end: ``file.py:factory`` / ``pkg.module:factory``, torch.export ``.pt2`` and TorchScript.

Exports with ``torch.onnx.export`` (dynamo for nn.Modules and ExportedPrograms, the TorchScript exporter for
ScriptModules) at the IR's opset, as one file. The batch dimension is exported as dynamic when the model allows
it (a ``.pt2`` keeps exactly the dynamic dimensions it was exported with).

``file.py:factory`` and ``module:factory`` run the user's code: that is what they are for. A ``.pt2`` archive is
read once and checked before torch sees its bytes (``_safety.check_pt2_archive``: no pickles, no compiled code);
TorchScript is loaded by torch's own restricted unpickler from the bytes read once.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import io
import sys
from pathlib import Path

import numpy as np
import onnx

from edgec import ir as edgec_ir
from edgec.compiler.frontends import SourceModel, resolve_input_shapes
from edgec.compiler.frontends._safety import check_pt2_archive
from edgec.errors import SourceModelError, UsageError
from edgec.source_spec import parse_source_spec

__all__ = ["lower_pytorch"]


def _load_factory(spec: str):
    import torch

    source = parse_source_spec(spec)
    module_spec, func_name = source.location, source.function
    try:
        if module_spec.endswith(".py"):
            path = Path(module_spec).resolve()
            name = f"_edgec_factory_{abs(hash(str(path)))}"
            loader_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.path.insert(0, str(path.parent))
            try:
                loader_spec.loader.exec_module(module)
            finally:
                sys.path.remove(str(path.parent))
        else:
            module = importlib.import_module(module_spec)
    except Exception as exc:  # user code: any exception is the user's to see, named
        raise SourceModelError(f"{module_spec}: importing it failed: {type(exc).__name__}: {exc}") from None
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise SourceModelError(f"{spec}: {module_spec} has no callable {func_name!r}")
    try:
        model = factory()
    except Exception as exc:  # user code
        raise SourceModelError(f"{spec}: the factory raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise SourceModelError(f"{spec}: the factory returned {type(model).__name__}, not a torch.nn.Module; "
                               "return the model instance")
    return model.eval()


def _forward_names(module) -> list[str]:
    schema = getattr(module.forward, "schema", None)
    if schema is not None:  # a TorchScript method: its schema lists the arguments
        return [a.name for a in schema.arguments if a.name != "self" and not a.has_default_value()]
    params = inspect.signature(module.forward).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            and p.default is inspect.Parameter.empty]


def _example_inputs(names: list[str], input_shapes: dict[str, list[int]], spec: str):
    import torch

    if not names:
        raise SourceModelError(f"{spec}: forward() takes no tensor inputs")
    input_shapes = resolve_input_shapes(input_shapes, names, spec)
    missing = [n for n in names if n not in input_shapes]
    if missing:
        wanted = " ".join(f"--input-shape {n}=..." for n in names)
        raise UsageError(f"{spec}: no shape for input {missing[0]!r}; the model's inputs are {', '.join(names)}: "
                         f"give {wanted} (e.g. 1x3x224x224)")
    input_shapes = {n: [1 if d is None and axis == 0 else d for axis, d in enumerate(dims)]
                    for n, dims in input_shapes.items()}
    unsized = [n for n, dims in input_shapes.items() if None in dims]
    if unsized:
        raise UsageError(f"{spec}: --input-shape {unsized[0]} leaves a dimension other than the batch dynamic; "
                         "exporting a PyTorch model needs its size")
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.randn(*input_shapes[n], generator=generator) for n in names)


def _to_numpy_list(out) -> list[np.ndarray]:
    import torch

    if isinstance(out, torch.Tensor):
        return [out.detach().numpy()]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [a for item in out for a in _to_numpy_list(item)]
    raise SourceModelError(f"model output of type {type(out).__name__} is not a tensor, tuple or dict of tensors")


def _runner(module):
    import torch

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            return _to_numpy_list(module(*[torch.from_numpy(np.ascontiguousarray(x)) for x in inputs]))

    return run


def _export_module(module, args, names: list[str], spec: str) -> tuple[onnx.ModelProto, list[str]]:
    import torch

    notes = []
    batch = torch.export.Dim("batch", min=1, max=4096)
    dynamic = {n: {0: batch} for n in names}
    # torch.export specialises dimensions of size 1, so trace the dynamic batch with two samples.
    traced = tuple(a.expand(2, *a.shape[1:]).contiguous() if a.shape[0] == 1 else a for a in args)
    try:
        program = torch.export.export(module, traced, dynamic_shapes=dynamic, strict=False)
        notes.append("batch dimension exported as dynamic")
    except Exception as exc:  # the model specialises its batch size: export it fixed
        try:
            program = torch.export.export(module, args, strict=False)
        except Exception as exc2:  # torch.export's failures are many and untyped; name the model
            raise SourceModelError(f"{spec}: torch.export failed: {type(exc2).__name__}: "
                                   f"{str(exc2).strip().splitlines()[0]}") from None
        notes.append(f"batch dimension kept fixed: dynamic export failed ({type(exc).__name__})")
        traced = args
    return _export_program(program, traced, spec), notes


def _export_program(program, args, spec: str) -> onnx.ModelProto:
    import torch

    try:
        onnx_program = torch.onnx.export(program, args, dynamo=True, external_data=False,
                                         opset_version=edgec_ir.IR_OPSET, verbose=False)
    except Exception as exc:  # exporter errors: name the model and the first line of the reason
        raise SourceModelError(f"{spec}: torch.onnx.export failed: {type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[0]}") from None
    return onnx_program.model_proto


def _export_script(module, args, names: list[str], spec: str) -> onnx.ModelProto:
    import torch

    buffer = io.BytesIO()
    try:
        torch.onnx.export(module, args, buffer, dynamo=False, input_names=names, opset_version=17,
                          dynamic_axes={n: {0: "batch"} for n in names})
    except Exception as exc:  # exporter errors
        raise SourceModelError(f"{spec}: TorchScript export to ONNX failed: {type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[0]}") from None
    return onnx.load_from_string(buffer.getvalue())


def _read_archive(spec: str, limit: int = 8 << 30) -> io.BytesIO:
    """The archive's bytes, read once: what is checked is what torch loads."""
    try:
        with open(spec, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise SourceModelError(f"{spec}: cannot read it ({exc.strerror})") from None
    if len(data) > limit:
        raise SourceModelError(f"{spec}: larger than {limit >> 30} GiB")
    return io.BytesIO(data)


def lower_pytorch(spec: str, kind: str, input_shapes: dict[str, list[int]], trust_source: bool = False
                  ) -> SourceModel:
    import torch

    notes: list[str] = []
    if kind == "torch-factory":
        module = _load_factory(spec)
        names = _forward_names(module)
        args = _example_inputs(names, input_shapes, spec)
        proto, notes = _export_module(module, args, names, spec)
        reference, framework = _runner(module), module
    elif kind == "torch-export":
        archive = _read_archive(spec)
        if not trust_source:
            check_pt2_archive(archive.getvalue(), spec)
        try:
            program = torch.export.load(archive)
        except Exception as exc:  # corrupt or incompatible archives
            raise SourceModelError(f"{spec}: cannot load torch.export archive: {type(exc).__name__}: {exc}") from None
        args = program.example_inputs[0] if program.example_inputs else None
        if args is None:
            raise SourceModelError(f"{spec}: the archive holds no example inputs; re-export it with "
                                   "torch.export.export(model, example_inputs)")
        names = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
        proto = _export_program(program, args, spec)
        module = program.module()
        reference, framework = _runner(module), program
    else:
        try:
            module = torch.jit.load(_read_archive(spec)).eval()
        except Exception as exc:  # corrupt archives
            raise SourceModelError(f"{spec}: cannot load TorchScript: {type(exc).__name__}: {exc}") from None
        names = _forward_names(module)
        args = _example_inputs(names, input_shapes, spec)
        proto = _export_script(module, args, names, spec)
        notes.append("exported with the TorchScript exporter, batch dimension dynamic")
        reference, framework = _runner(module), module
    model = edgec_ir.from_proto(proto)
    example = {v.name: list(a.shape) for v, a in zip(model.graph.inputs, args)}
    layouts = {v.name: "NCHW" for v in model.graph.inputs if v.shape is not None and len(v.shape) == 4}
    return SourceModel(path=spec, kind=kind, model=model, reference=reference, layouts=layouts, notes=notes,
                       framework_model=framework, example_shapes=example)
