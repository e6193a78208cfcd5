"""The float ONNX IR -> a tf_keras model with onnx2tf, guarded against its known misbehaviour.

Guards (see shared/TOOLCHAIN.md; each has a test in tests/integration/test_tflite_*.py):
- onnx2tf downloads a calibration sample file from the internet for 4-D 3-channel inputs with a fixed batch
  <= 20, even for a float conversion. edgec hands it a local, seeded sample instead, and any other download
  attempt of its ``requests`` raises at once instead of reaching the network.
- onnx2tf overwrites the .onnx it is given: it only ever sees a copy in a temporary directory, which is also its
  working directory (it writes stray files there).
- It prints through ``print``: its output is collected and written to stderr, which the compile sends to
  ``logs/compile.log``; on failure the ONNX node and op it stopped at go into the error message.
- It mis-converts graphs with a dynamic batch and shape-computing chains (TF-style "same" padding fed by
  Shape/ConstantOfShape/Slice/Cast, then a Conv after a residual Add): the graph is prepared first, with every
  dimension fixed (batch 1) and onnxslim folding those chains into constants.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from edgec.compare import matches
from edgec.errors import CompileError, UsageError

__all__ = ["SAMPLE_FILE", "OfflineGuardError", "channels_last", "offline", "onnx_to_keras", "permutations", "prepare"]

# The file onnx2tf's ``download_test_image_data`` looks for in its working directory before downloading it.
SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


class OfflineGuardError(CompileError):
    """onnx2tf tried to reach the network during a conversion."""


def channels_last(rank: int) -> list[int]:
    """The permutation NC... -> N...C for a tensor of ``rank`` (identity below rank 3)."""
    return [0, *range(2, rank), 1] if rank >= 3 else list(range(rank))


def _fix_shapes(proto: onnx.ModelProto, example_shapes: dict[str, list[int]]) -> list[str]:
    """Fix every dynamic input dimension in place (batch 1, the rest from ``example_shapes``)."""
    notes = []
    initializers = {i.name for i in proto.graph.initializer}
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        example = example_shapes.get(value.name) or []
        dims = value.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            fixed = 1 if axis == 0 else (example[axis] if axis < len(example) else None)
            if fixed is None:
                raise UsageError(f"input {value.name!r}: dimension {axis} is dynamic; TFLite needs fixed shapes: "
                                 f"give --input-shape {value.name}=" + "x".join(
                                     str(d.dim_value) if d.HasField("dim_value") else "1" for d in dims))
            dim.Clear()
            dim.dim_value = fixed
            notes.append(f"input {value.name}: dimension {axis} fixed to {fixed}")
    for value in proto.graph.output:  # inferred again from the fixed inputs
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.Clear()
    del proto.graph.value_info[:]
    return notes


def _ort_fold(proto: onnx.ModelProto) -> onnx.ModelProto:
    """onnxruntime's basic (standard-op, semantics-preserving) optimizations: with every shape fixed, constant
    folding turns Shape/Gather/ConstantOfShape/Slice/Cast chains into constants."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgec-fold-") as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(Path(tmp) / "folded.onnx")
        ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def _outputs(proto: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _same_outputs(want: list[np.ndarray], proto: onnx.ModelProto, feeds: dict) -> bool:
    try:
        got = _outputs(proto, feeds)
    except Exception:  # a helper produced a model onnxruntime cannot run: not the same model
        return False
    return matches(want, got)


def prepare(proto: onnx.ModelProto, example_shapes: dict[str, list[int]],
            seed: int = 0) -> tuple[onnx.ModelProto, list[str]]:
    """Fix every input dimension (batch 1), fold the now-constant shape arithmetic with onnxruntime, simplify
    with onnxslim; each step is kept only if the graph still computes the same outputs. Returns (model, notes).

    onnxslim alone is not trusted here: on a TF-"same"-padded PyTorch export its shape inference materializes
    wrong pad amounts (0.1 relative error); folded by onnxruntime first, the same graph simplifies correctly.
    """
    import onnxslim

    fixed = onnx.ModelProto.FromString(proto.SerializeToString())
    notes = _fix_shapes(fixed, example_shapes)
    rng = np.random.default_rng(seed)
    initializers = {i.name for i in fixed.graph.initializer}
    feeds = {v.name: rng.standard_normal([d.dim_value for d in v.type.tensor_type.shape.dim]).astype(
        onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type))
        for v in fixed.graph.input if v.name not in initializers}
    want = _outputs(fixed, feeds)
    best = fixed
    steps = (("onnxruntime constant folding", _ort_fold),
             ("onnxslim", lambda p: onnxslim.slim(onnx.ModelProto.FromString(p.SerializeToString()),
                                                  model_check=False)))
    for name, step in steps:
        try:
            candidate = step(best)
        except Exception as exc:  # a helper's crash must not become the user's traceback: skip the step
            notes.append(f"{name} failed on the fixed-shape graph ({type(exc).__name__}); step skipped")
            continue
        if _same_outputs(want, candidate, feeds):
            best = candidate
        else:
            notes.append(f"{name} changed the model's outputs; step skipped")
    notes.append(f"fixed-shape graph prepared for onnx2tf: {len(proto.graph.node)} -> {len(best.graph.node)} nodes")
    return best, notes


class _NoNetwork:
    """Stands in for the ``requests`` module inside onnx2tf while it converts."""

    class exceptions:  # onnx2tf catches requests.exceptions.Timeout around its download
        Timeout = type("Timeout", (Exception,), {})

    def get(self, url, *args, **kwargs):
        raise OfflineGuardError(f"onnx2tf tried to download {url}; edgec converts without network access "
                                "(report this onnx2tf path to edgec)")

    post = put = request = get


def _sample_images(seed: int) -> np.ndarray:
    """What onnx2tf would download: 20 NHWC 128x128 RGB images in [0, 1]; seeded noise serves the same purpose
    (inputs for its layout-checking dummy inference)."""
    return np.random.default_rng(seed).random((20, 128, 128, 3), dtype=np.float32)


@contextlib.contextmanager
def offline(workdir: Path, seed: int = 0):
    """Run onnx2tf inside ``workdir`` with its sample file present and its network access refused."""
    from onnx2tf import onnx2tf as o2t_main
    from onnx2tf.utils import common_functions

    np.save(workdir / SAMPLE_FILE, _sample_images(seed))
    saved_requests = common_functions.requests
    saved_cwd = os.getcwd()
    common_functions.requests = _NoNetwork()
    os.chdir(workdir)
    try:
        yield o2t_main
    finally:
        os.chdir(saved_cwd)
        common_functions.requests = saved_requests


def _node_op(proto: onnx.ModelProto, name: str | None) -> str:
    for node in proto.graph.node:
        if node.name == name:
            return node.op_type
    return "?"


def _failure(exc: BaseException, proto: onnx.ModelProto, log: str) -> CompileError:
    """A one-line error naming the ONNX node and op onnx2tf stopped at."""
    if isinstance(exc, CompileError):
        return exc
    name = getattr(exc, "onnx_op_name", None)
    if name is None:
        found = re.findall(r"onnx_op_name: (\S+)", re.sub(r"\x1b\[[0-9;]*m", "", log))
        name = found[-1] if found else None
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, ModuleNotFoundError):
        reason = "onnx2tf has no converter for this op"
    where = f"ONNX node {name!r} (op {_node_op(proto, name)})" if name else "the model"
    return CompileError(f"onnx2tf could not convert {where}: {reason}; use --format onnx, or replace the op "
                        "in the source model (rerun with --debug to see onnx2tf's own output)")


def onnx_to_keras(proto: onnx.ModelProto, seed: int = 0, keep_channels_last: list[str] | None = None):
    """Convert a prepared (fixed-shape) ONNX model; returns onnx2tf's tf_keras model. Its inputs are made
    channels-last, except those named in ``keep_channels_last`` (already channels-last)."""
    log = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="edgec-onnx2tf-") as tmp:
        workdir = Path(tmp)
        copy = workdir / "model.onnx"  # onnx2tf may rewrite its input file: it gets this copy only
        copy.write_bytes(proto.SerializeToString())
        try:
            with offline(workdir, seed) as o2t, contextlib.redirect_stdout(log):
                model = o2t.convert(input_onnx_file_path=str(copy), output_folder_path=str(workdir / "out"),
                                    disable_model_save=True, non_verbose=True, not_use_onnxsim=True,
                                    keep_nwc_or_nhwc_or_ndhwc_input_names=keep_channels_last or None)
        except (Exception, SystemExit) as exc:  # onnx2tf raises anything, or calls sys.exit(1)
            raise _failure(exc, proto, log.getvalue()) from None
        finally:
            sys.stderr.write(log.getvalue())  # into logs/compile.log during a compile
    return model


def _candidates(onnx_shape: tuple, tf_shape: tuple) -> list[list[int]]:
    """Permutations (identity, channels-last) that turn the ONNX shape into the TF one."""
    perms = [list(range(len(onnx_shape))), channels_last(len(onnx_shape))]
    unique = [p for k, p in enumerate(perms) if p not in perms[:k]]
    return [p for p in unique if tuple(onnx_shape[a] for a in p) == tuple(tf_shape)]


def permutations(keras_model, proto: onnx.ModelProto, seed: int = 0,
                 keep: list[str] | None = None) -> tuple[list, list]:
    """(input perms, output perms) from ONNX layout to the TF model's.

    Inputs: onnx2tf makes rank >= 3 inputs channels-last; the shapes confirm it. Outputs: onnx2tf decides per
    graph, so both runs are compared on one seeded input and the permutation that matches is taken.
    """
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds, input_perms = {}, []
    for meta, tensor in zip(session.get_inputs(), keras_model.inputs):
        tf_shape = tuple(int(d) for d in tensor.shape)
        options = _candidates(tuple(meta.shape), tf_shape) or [None]
        preferred = list(range(len(meta.shape))) if meta.name in (keep or []) else channels_last(len(meta.shape))
        perm = preferred if preferred in options else options[0]
        if perm is None:
            raise CompileError(f"onnx2tf made input {meta.name!r} {list(tf_shape)} from ONNX {meta.shape}; edgec "
                               "cannot map that layout: use --format onnx")
        input_perms.append(perm)
        feeds[meta.name] = rng.standard_normal(meta.shape).astype(np.float32)
    want = session.run(None, feeds)
    tf_inputs = [feeds[m.name].transpose(p) for m, p in zip(session.get_inputs(), input_perms)]
    got = keras_model(tf_inputs if len(tf_inputs) > 1 else tf_inputs[0], training=False)
    got = [np.asarray(t) for t in (got if isinstance(got, (list, tuple)) else [got])]
    output_perms = []
    for meta, a, b in zip(session.get_outputs(), want, got):
        errors = {tuple(p): float(np.max(np.abs(a.transpose(p) - b))) if a.size else 0.0
                  for p in _candidates(a.shape, b.shape)}
        if not errors:
            raise CompileError(f"onnx2tf output {meta.name!r} has shape {list(b.shape)}, ONNX {list(a.shape)}; "
                               "edgec cannot map that layout: use --format onnx")
        output_perms.append(list(min(errors, key=errors.get)))
    return input_perms, output_perms
