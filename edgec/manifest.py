"""Reading an untrusted ``manifest.json`` (or any JSON a stranger sends): bounded, typed, paths confined.

A bundle comes from somewhere else (a colleague, a CI artefact, a device's disk), so its manifest is checked
before anything acts on it: at most ``MAX_MANIFEST_BYTES`` and ``MAX_JSON_DEPTH`` levels of nesting, the keys
edgec reads have the types it expects, and every path it names (model, encoded model, references) is a plain
relative name (no ``..``, no absolute path, no backslash) listed in ``files``, so the bundle's hashes, and
with them ``bundle_id``, cover everything it loads. Each failure is a ``BundleError`` naming the key.

Shipped to devices inside the agent: standard library only, Python 3.9 syntax.
"""

from __future__ import annotations

import json
import re

from edgec.errors import BundleError

__all__ = ["MAX_JSON_DEPTH", "MAX_MANIFEST_BYTES", "SHA256_RE", "check_depth", "is_plain_name", "loads_bounded",
           "validate_manifest"]

MAX_MANIFEST_BYTES = 16 << 20  # a real manifest is a few kB to a few hundred kB (per-pass notes)
MAX_JSON_DEPTH = 64  # a real manifest nests about 8 deep
SHA256_RE = re.compile(r"[0-9a-f]{64}")
_NAME_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


def check_depth(value, limit: int = MAX_JSON_DEPTH) -> None:
    """Raise ValueError when ``value`` (parsed JSON) nests deeper than ``limit`` (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                raise ValueError(f"nested deeper than {limit} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = str.maketrans("", "", "".join(chr(c) for c in range(128) if chr(c) not in "[]{}"))


def raw_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in JSON text, found without parsing (strings skipped)."""
    depth = deepest = 0
    for char in _STRING.sub("", text).translate(_BRACKETS):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def loads_bounded(text, max_bytes: int, max_depth: int = MAX_JSON_DEPTH):
    """``json.loads`` of at most ``max_bytes`` and ``max_depth``; ValueError (with the reason) otherwise.

    Python's decoder recurses per nesting level, and a process that imported onnx2tf runs with the recursion
    limit raised to 2**31 (onnx2tf sets it at import), where a deep document overflows the C stack instead of
    raising RecursionError: the depth is measured on the text first.
    """
    if len(text) > max_bytes:
        raise ValueError(f"{len(text)} bytes, more than the limit of {max_bytes}")
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8", errors="replace")
    if raw_depth(text) > max_depth:
        raise ValueError(f"nested deeper than {max_depth} levels")
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"nested deeper than {max_depth} levels") from None
    check_depth(value, max_depth)
    return value


def is_plain_name(rel) -> bool:
    """True for a relative POSIX path of ordinary names (``model.onnx``, ``reference/inputs.npz``)."""
    if not isinstance(rel, str) or not rel or len(rel) > 255:
        return False
    return all(_NAME_PART.fullmatch(part) and part not in (".", "..") for part in rel.split("/"))


def _fail(where: str, key: str, problem: str):
    raise BundleError(f"{where}: {key} {problem}; recompile the bundle with edgec")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_files(where: str, files) -> None:
    if not isinstance(files, dict):
        _fail(where, "'files'", "is not an object of {path: {sha256, size}}")
    for rel, meta in files.items():
        if not is_plain_name(rel) or rel == "manifest.json":
            _fail(where, f"files entry {rel!r}", "is not a plain relative path inside the bundle")
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str) \
                or not SHA256_RE.fullmatch(meta["sha256"]) or not isinstance(meta.get("size"), int) \
                or isinstance(meta.get("size"), bool) or meta["size"] < 0:
            _fail(where, f"files entry {rel!r}", "needs a 64-hex 'sha256' and a non-negative integer 'size'")


def _check_named(where: str, key: str, rel, files: dict) -> None:
    if not is_plain_name(rel):
        _fail(where, key, f"{rel!r} is not a plain relative path inside the bundle")
    if rel not in files:
        _fail(where, key, f"{rel!r} is not listed in 'files' (so no hash covers it)")


def _check_io(where: str, io) -> None:
    if not isinstance(io, dict) or not isinstance(io.get("inputs"), list) or not isinstance(io.get("outputs"), list):
        _fail(where, "'io'", "needs lists 'inputs' and 'outputs'")
    for kind in ("inputs", "outputs"):
        for k, entry in enumerate(io[kind]):
            label = f"io.{kind}[{k}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                _fail(where, label, "needs a string 'name'")
            shape = entry.get("shape")
            if shape is not None and (not isinstance(shape, list) or len(shape) > 32 or not all(
                    d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 0) for d in shape)):
                _fail(where, f"{label}.shape", "must be a list of non-negative integers or nulls")
            if entry.get("dtype") is not None and not isinstance(entry["dtype"], str):
                _fail(where, f"{label}.dtype", "must be a string")


def _check_encoding(where: str, encoding, files: dict) -> None:
    if not isinstance(encoding, dict):
        _fail(where, "'model_encoding'", "is not an object")
    _check_named(where, "model_encoding.file", encoding.get("file"), files)
    if not isinstance(encoding.get("sha256"), str) or not SHA256_RE.fullmatch(encoding["sha256"]):
        _fail(where, "model_encoding.sha256", "is not 64 lowercase hex digits")
    size = encoding.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        _fail(where, "model_encoding.size", "is not a non-negative integer")


def validate_manifest(manifest, where: str) -> None:
    """Raise BundleError naming the first key of ``manifest`` that edgec could not safely act on."""
    if not isinstance(manifest, dict):
        raise BundleError(f"{where}: expected a JSON object; recompile the bundle")
    for key in ("format", "model_file", "io", "files", "reference"):
        if key not in manifest:
            raise BundleError(f"{where}: missing key {key!r}; recompile the bundle")
    if not isinstance(manifest["format"], str):
        _fail(where, "'format'", "is not a string")
    files = manifest["files"]
    _check_files(where, files)
    encoding = manifest.get("model_encoding")
    if encoding:
        _check_encoding(where, encoding, files)
        if not is_plain_name(manifest["model_file"]):
            _fail(where, "'model_file'", f"{manifest['model_file']!r} is not a plain relative name")
    else:
        _check_named(where, "'model_file'", manifest["model_file"], files)
    _check_io(where, manifest["io"])
    reference = manifest["reference"]
    if not isinstance(reference, dict):
        _fail(where, "'reference'", "is not an object")
    for key in ("inputs", "outputs"):
        _check_named(where, f"reference.{key}", reference.get(key), files)
    if not _number(reference.get("rtol")) or not reference["rtol"] >= 0:
        _fail(where, "reference.rtol", "is not a non-negative number")
    atol = reference.get("atol")  # one number, or one per output (each output's own scale)
    values = atol if isinstance(atol, list) and len(atol) == len(manifest["io"]["outputs"]) else [atol]
    if not all(_number(v) and v >= 0 for v in values):
        _fail(where, "reference.atol", "is not a non-negative number, or one per output")
    for key in ("runtime", "target"):
        if manifest.get(key) is not None and not isinstance(manifest[key], dict):
            _fail(where, f"'{key}'", "is not an object")
    if manifest.get("name") is not None and not isinstance(manifest["name"], str):
        _fail(where, "'name'", "is not a string")
