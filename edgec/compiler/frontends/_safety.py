"""What a model file may hold before a framework is allowed to load it: constructs that run code are refused.

Each check reads the file's own structure (JSON configs, zip members, the SavedModel protobuf) without the
framework's loader, and raises ``UnsafeInputError`` naming the construct and ``--trust-source``:

* Keras (``.keras`` config.json, legacy ``.h5`` model_config): an allow-list of where classes come from (only
  Keras's own modules: anything else is code that Keras would import or a registered custom object) plus a
  deny-list of the built-in classes that carry code: ``Lambda`` (marshalled Python bytecode in tf_keras, a
  Python function in Keras 3) and ``TFSMLayer`` (loads and runs another SavedModel).
* SavedModel: a deny-list of TensorFlow ops with effects outside the tensors (files, Python, network, process
  output). An allow-list of "pure" ops is not workable: every SavedModel holds stateful ops (variables, the saver's
  own checkpoint I/O, table initialisers) and TensorFlow has well over a thousand ops; the deny-list is the
  families of ops that reach outside the graph, matched by name and prefix. The saver's SaveV2/RestoreV2 are
  allowed only inside the saver's own functions (TensorFlow runs them itself, on the SavedModel's variables).
* ``.pt2`` (torch.export archive): no pickled payloads (``use_pickle`` weights or constants, torchbind/opaque
  objects), no AOTInductor shared libraries, and every ``.pt`` member must load with ``weights_only=True``
  (torch falls back to a full unpickle when that fails).
"""

from __future__ import annotations

import io
import json
import re
import zipfile

from edgec.errors import UnsafeInputError

__all__ = ["TRUST_HINT", "check_keras_config", "check_pt2_archive", "check_savedmodel", "keras3_config"]

TRUST_HINT = "pass --trust-source only if you trust whoever made this file (loading it then runs that code)"

_KERAS_MODULES = re.compile(r"(keras|tf_keras)(\.[A-Za-z_][\w]*)*")
_KERAS_CODE_CLASSES = {"Lambda", "TFSMLayer", "__lambda__"}


def _refuse(path, what: str) -> None:
    raise UnsafeInputError(f"{path}: {what}; loading it would run code from the file, so edgec refuses it "
                           f"({TRUST_HINT})")


def _dicts(value):
    """Every dict inside a parsed JSON value (iterative)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def check_keras_config(config, path) -> None:
    """Refuse a Keras model config holding code: Lambda/TFSMLayer, marshalled functions, custom objects."""
    for item in _dicts(config):
        name = item.get("class_name")
        label = f"{name} {(item.get('config') or {}).get('name', '')!s}".strip() if isinstance(
            item.get("config"), dict) else str(name)
        if name in _KERAS_CODE_CLASSES or item.get("function_type") in ("lambda", "raw"):
            _refuse(path, f"layer {label!r} carries Python code (a Lambda layer or a serialized function)")
        module = item.get("module")
        if module is not None and not (isinstance(module, str) and _KERAS_MODULES.fullmatch(module)):
            _refuse(path, f"{label!r} is a custom object from module {module!r}, not a Keras built-in")
        registered = item.get("registered_name")
        if (isinstance(registered, str) and ">" in registered) or (isinstance(name, str) and ">" in name):
            _refuse(path, f"{label!r} is a registered custom object ({registered or name!r})")


def keras3_config(config) -> bool:
    """True when the config has Keras 3's structure (DTypePolicy objects, ``batch_shape``); False for tf.keras 2."""
    for item in _dicts(config):
        if item.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") or "batch_shape" in item:
            return True
    return False


# Ops that reach outside the tensors: files, Python, the network, process output, compiled code.
_TF_DENY = {
    "WriteFile", "ReadFile", "MatchingFiles", "PyFunc", "PyFuncStateless", "EagerPyFunc", "Print", "PrintV2",
    "ImmutableConst", "Save", "SaveSlices", "SaveV2", "MergeV2Checkpoints", "Restore", "RestoreSlice", "RestoreV2",
    "LoadAndRemapMatrix", "DecodeProtoV2", "EncodeProto", "SqlDataset", "ExperimentalSqlDataset",
    "FileSystemSetConfiguration", "ShellExecute", "LMDBReader", "ImportEvent",
}
_TF_DENY_PREFIXES = (
    "Write", "CreateSummary", "FlushSummary", "CloseSummary", "Debug", "Collective", "Send", "Recv", "_Send",
    "_Recv", "_HostSend", "_HostRecv", "Rpc", "TryRpc", "Gcs", "BigQuery", "Snapshot", "SaveDataset", "LoadDataset",
    "DatasetToTFRecord", "ExperimentalDatasetToTFRecord", "TFRecord", "TextLine", "FixedLengthRecord", "CSVDataset",
    "ExperimentalCSVDataset", "WholeFile", "IdentityReader", "ReaderRead", "DistributedSave",
)
_SAVER_OPS = {"SaveV2", "RestoreV2", "MergeV2Checkpoints"}


def _denied(op: str) -> bool:
    return op in _TF_DENY or op.startswith(_TF_DENY_PREFIXES)


def _called(node) -> list[str]:
    """Functions a node calls through its attributes (StatefulPartitionedCall's ``f``, If/While branches ...)."""
    names = []
    for value in node.attr.values():
        if value.HasField("func"):
            names.append(value.func.name)
        names.extend(f.name for f in value.list.func)
    return names


def _saver_functions(meta_graph, functions: dict) -> set:
    saver = meta_graph.saver_def
    roots = {saver.save_tensor_name.split(":")[0], saver.restore_op_name.split(":")[0]} - {""}
    todo = [f for node in meta_graph.graph_def.node if node.name in roots for f in _called(node)]
    seen: set = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        todo.extend(f for node in functions[name].node_def for f in _called(node))
    return seen


def check_savedmodel(pb_bytes: bytes, path) -> None:
    """Refuse a SavedModel whose graphs hold side-effecting ops (``_TF_DENY``), wherever they are."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString(pb_bytes)
    except Exception:  # protobuf's DecodeError and friends
        from edgec.errors import SourceModelError

        raise SourceModelError(f"{path}: saved_model.pb is not a SavedModel protobuf") from None
    for meta_graph in saved.meta_graphs:
        functions = {f.signature.name: f for f in meta_graph.graph_def.library.function}
        saver = _saver_functions(meta_graph, functions)
        places = [("the graph", meta_graph.graph_def.node, False)]
        places += [(f"function {name!r}", f.node_def, name in saver) for name, f in functions.items()]
        for where, nodes, in_saver in places:
            for node in nodes:
                if _denied(node.op) and not (in_saver and node.op in _SAVER_OPS):
                    _refuse(path, f"op {node.op} (node {node.name!r} in {where}) acts outside the model "
                                  "(files, Python, network or process output)")


def _pt2_configs(archive: zipfile.ZipFile, root: str, path) -> None:
    for name in archive.namelist():
        rel = name[len(root):]
        if not (rel.startswith(("data/weights/", "data/constants/")) and rel.endswith("_config.json")):
            continue
        try:
            config = json.loads(archive.read(name)).get("config") or {}
        except (ValueError, AttributeError, RecursionError):
            _refuse(path, f"{rel} is not a readable payload config")
        for fqn, meta in (config.items() if isinstance(config, dict) else []):
            if not isinstance(meta, dict) or meta.get("use_pickle"):
                _refuse(path, f"{rel}: {fqn!r} is stored as a pickle (use_pickle)")
            if rel.startswith("data/constants/") and not str(meta.get("path_name", "")).startswith("tensor_"):
                # custom_obj_* (torchbind) and opaque_obj_* (pickle.loads) constants are pickles
                _refuse(path, f"{rel}: {fqn!r} is a pickled object ({meta.get('path_name')})")


def check_pt2_archive(data: bytes, path) -> None:
    """Refuse a torch.export archive (its bytes) holding pickles or compiled code, before torch reads it."""
    import torch

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        from edgec.errors import SourceModelError

        raise SourceModelError(f"{path}: not a readable zip archive") from None
    roots = {n[:-len("archive_format")] for n in names if n.endswith("archive_format")}
    if len(roots) != 1 or any(not n.startswith(next(iter(roots))) for n in names):
        _refuse(path, "not a single torch.export archive (a legacy or mixed archive is loaded with pickle)")
    root = roots.pop()
    for name in names:
        rel = name[len(root):]
        if rel.startswith(("data/aotinductor/", "data/executorch/", "data/mtia/")) or rel.endswith(
                (".so", ".dll", ".dylib", ".cpp", ".pyd")):
            _refuse(path, f"{rel} is compiled code or a pre-compiled package")
    _pt2_configs(archive, root, path)
    for name in names:
        if name.endswith(".pt") and archive.getinfo(name).file_size:
            try:
                torch.load(io.BytesIO(archive.read(name)), weights_only=True)
            except Exception:  # torch then retries with a full unpickle: that is the code path refused here
                _refuse(path, f"{name[len(root):]} is a pickle that needs more than tensors to load")
