"""Keras front-end: ``.keras`` (Keras 3), legacy ``.h5`` (tf.keras 2 via tf_keras, or Keras 3) and SavedModel.

Lowering traces the model as a ``tf.function`` and converts it with tf2onnx (its ``from_keras`` does not accept
Keras 3 models). ``.h5`` files are loaded with ``compile=False``: Keras 3 cannot deserialise the compiled
losses and metrics of its own ``.h5`` files.

Untrusted by default (``_safety``): the config is read and checked first (no Lambda, no custom objects), the
loader (Keras 3 or tf_keras) is chosen by the config's structure, and Keras 3 runs with ``safe_mode``; a
SavedModel's graphs are checked for side-effecting ops. ``--trust-source`` skips those checks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgec import ir as edgec_ir
from edgec.compiler.frontends import SourceModel, resolve_input_shapes, shape_hint
from edgec.compiler.frontends._safety import check_keras_config, check_savedmodel, keras3_config
from edgec.errors import SourceModelError, UsageError

__all__ = ["lower_keras"]


def _tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


MAX_CONFIG_BYTES = 64 << 20


def _h5_config(path: Path):
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            text = handle.attrs.get("model_config")
    except OSError as exc:
        raise SourceModelError(f"{path}: not a readable HDF5 file ({exc})") from None
    if text is None:
        raise SourceModelError(f"{path}: an HDF5 file holding weights only (no model_config); save the whole "
                               "model (model.save('model.h5') or model.save('model.keras'))")
    return text


def _zip_config(path: Path):
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            if archive.getinfo("config.json").file_size > MAX_CONFIG_BYTES:
                raise SourceModelError(f"{path}: config.json is larger than {MAX_CONFIG_BYTES} bytes")
            return archive.read("config.json")
    except (KeyError, OSError, zipfile.BadZipFile):
        raise SourceModelError(f"{path}: not a Keras archive (no readable config.json)") from None


def _keras_config(path: Path, kind: str):
    """The model's config as parsed JSON, read without Keras (nothing in it is acted on yet)."""
    from edgec.manifest import loads_bounded

    text = _h5_config(path) if kind == "keras-h5" else _zip_config(path)
    try:
        return loads_bounded(text, MAX_CONFIG_BYTES)
    except (ValueError, TypeError) as exc:
        raise SourceModelError(f"{path}: the model config is not readable JSON ({exc})") from None


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _private_copy(path: Path, workdir: str) -> Path:
    """A copy in a private directory: what is checked is what Keras loads, whatever happens to ``path``."""
    import shutil

    copy = Path(workdir) / ("model.h5" if path.suffix.lower() in (".h5", ".hdf5") else "model.keras")
    shutil.copyfile(path, copy)
    return copy


def _load_keras(path: Path, kind: str, trust_source: bool = False):
    """Load a .keras/.h5 model after checking its config; tf_keras only for configs shaped like tf.keras 2's
    (the loader is chosen by the config's structure, never by a version attribute the file states)."""
    import tempfile

    _tensorflow()
    with tempfile.TemporaryDirectory(prefix="edgec-keras-") as workdir:
        copy = _private_copy(path, workdir)
        config = _keras_config(copy, kind)
        if not trust_source:
            check_keras_config(config, path)
        try:
            if not keras3_config(config):  # tf.keras 2 structure: Keras 3 cannot read it
                import tf_keras

                return tf_keras.models.load_model(copy, compile=False)
            import keras

            return keras.models.load_model(copy, compile=False, safe_mode=not trust_source)
        except SourceModelError:
            raise
        except Exception as exc:  # Keras raises many kinds of errors for unreadable files
            raise SourceModelError(f"{path}: Keras cannot load this model: {_first_line(exc)}") from None


def _specs(names, shapes, dtypes, input_shapes: dict[str, list[int]], path: Path):
    tf = _tensorflow()
    input_shapes = resolve_input_shapes(input_shapes, names, str(path))
    specs, example = [], {}
    for name, shape, dtype in zip(names, shapes, dtypes):
        shape = list(shape)
        given = input_shapes.get(name)
        if given is not None and len(given) != len(shape):
            raise UsageError(f"{path}: --input-shape {name} has {len(given)} dimensions, the model's input has "
                             f"{len(shape)}")
        fixed = [None, *[given[i] if given and given[i] is not None else d for i, d in enumerate(shape)][1:]]
        if any(d is None for d in fixed[1:]):
            raise UsageError(f"{path}: input {name!r} has dynamic dimensions {shape}; give "
                             f"{shape_hint(name, shape)} (the sizes your data have)")
        specs.append(tf.TensorSpec(fixed, dtype, name=name))
        example[name] = [given[0] if given and given[0] else 1, *fixed[1:]]
    return specs, example


def _convert(function, specs, path: Path):
    import tf2onnx

    try:
        proto, _ = tf2onnx.convert.from_function(function, input_signature=specs, opset=edgec_ir.IR_OPSET)
    except Exception as exc:  # tf2onnx raises assorted errors; name the model and the first line
        raise SourceModelError(f"{path}: tf2onnx could not convert the model: {_first_line(exc)}") from None
    return proto


def _rename_outputs(model, names: list[str]) -> None:
    used = {v.name for v in model.graph.inputs}
    for value, name in zip(model.graph.outputs, names):
        clean = name if name not in used else f"{name}_out"
        value.name = clean
        used.add(clean)


def lower_keras(spec: str, kind: str, input_shapes: dict[str, list[int]], trust_source: bool = False) -> SourceModel:
    path = Path(spec)
    tf = _tensorflow()
    if kind == "savedmodel":
        return _lower_savedmodel(path, input_shapes, trust_source)
    model = _load_keras(path, kind, trust_source)
    names = [t.name.split(":")[0] for t in model.inputs]
    specs, example = _specs(names, [t.shape for t in model.inputs], [t.dtype for t in model.inputs],
                            input_shapes, path)

    def call(*args):
        out = model(list(args) if len(args) > 1 else args[0], training=False)
        return out if isinstance(out, (list, tuple)) else [out]

    proto = _convert(tf.function(call, input_signature=specs), specs, path)
    ir_model = edgec_ir.from_proto(proto)
    output_names = list(getattr(model, "output_names", None) or [])
    if len(output_names) != len(ir_model.graph.outputs):
        output_names = [f"output_{k}" for k in range(len(ir_model.graph.outputs))]
    _rename_outputs(ir_model, output_names)

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(o) for o in call(*[tf.constant(x) for x in inputs])]

    layouts = {v.name: "NHWC" for v in ir_model.graph.inputs if v.shape is not None and len(v.shape) == 4}
    source_kind = kind if kind != "keras-h5" else "keras-h5"
    return SourceModel(path=str(path), kind=source_kind, model=ir_model, reference=run, layouts=layouts,
                       framework_model=model, example_shapes=example)


def _lower_savedmodel(path: Path, input_shapes: dict[str, list[int]], trust_source: bool = False) -> SourceModel:
    tf = _tensorflow()
    if not trust_source:
        check_savedmodel((path / "saved_model.pb").read_bytes(), path)
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TF raises many error types for bad SavedModels
        raise SourceModelError(f"{path}: TensorFlow cannot load this SavedModel: {_first_line(exc)}") from None
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise SourceModelError(f"{path}: the SavedModel has no 'serving_default' signature; export it with one")
    in_specs = signature.structured_input_signature[1]
    names = sorted(in_specs)
    outs = sorted(signature.structured_outputs)
    specs, example = _specs(names, [in_specs[n].shape for n in names], [in_specs[n].dtype for n in names],
                            input_shapes, path)

    def call(*args):
        result = signature(**dict(zip(names, args)))
        return [result[o] for o in outs]

    proto = _convert(tf.function(call, input_signature=specs), specs, path)
    ir_model = edgec_ir.from_proto(proto)
    _rename_outputs(ir_model, outs)

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(o) for o in call(*[tf.constant(x) for x in inputs])]

    layouts = {v.name: "NHWC" for v in ir_model.graph.inputs if v.shape is not None and len(v.shape) == 4}
    return SourceModel(path=str(path), kind="savedmodel", model=ir_model, reference=run, layouts=layouts,
                       framework_model=loaded, example_shapes=example)
