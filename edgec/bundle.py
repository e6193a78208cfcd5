"""Bundles: a directory holding a model, ``manifest.json`` and reference inputs/outputs that prove it.

Layout of a bundle directory::

    manifest.json                 this module's schema (``SCHEMA_VERSION``); see README "Bundle format"
    model.onnx | model.tflite     the model the device runs
    reference/inputs.npz          arrays ``i0, i1, ...`` in the order of ``manifest["io"]["inputs"]``
    reference/outputs.npz         arrays ``o0, o1, ...`` the model produced for them on the compiling machine
    logs/compile.log              third-party console output of the compile (not hashed, not part of the proof)

A bundle for a storage-bound device may hold its model deflated: ``manifest["model_encoding"]`` is then
``{"codec": "zlib", "file": "model.onnx.zlib", "sha256": ..., "size": ...}`` (sha256 and size of the inflated
model) and ``model_bytes`` inflates it once into a private cache directory, checking that sha256 on every use.

``manifest["files"]`` maps every file but the manifest and ``logs/`` to its sha256 and size. The bundle's
identity (``bundle_id``) is the sha256 of the manifest bytes, so it changes when any hashed file changes. Every
path the manifest names must be one of those files (``edgec.manifest`` checks it), and what is loaded is the
bytes that were hashed: ``read_file`` and ``model_bytes`` read a file once, check it and hand over the buffer.

This module is shipped to devices inside the agent: standard library only (numpy imported lazily), and
Python 3.9 syntax.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edgec.errors import BundleError, UsageError
from edgec.manifest import MAX_MANIFEST_BYTES, SHA256_RE, loads_bounded, validate_manifest

__all__ = [
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "Bundle",
    "check_reference",
    "deflate_model",
    "from_model_layout",
    "inflate_model",
    "read_npz",
    "sha256_bytes",
    "sha256_file",
    "to_model_layout",
    "write_atomically",
]

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
UNHASHED_PREFIXES = ("logs/",)
MAX_REFERENCE_BYTES = 256 << 20  # per reference array: a batch of a few large images or outputs


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_bytes(manifest: dict) -> bytes:
    """The canonical serialisation: sorted keys, so the same content always gives the same bytes."""
    return (json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


class Bundle:
    """A bundle directory on disk. Opening it reads and checks the manifest, not the files."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST_NAME
        if not self.path.is_dir():
            raise BundleError(f"{self.path}: not a bundle directory (make one with `edgec compile`)")
        if not manifest_path.is_file():
            raise BundleError(f"{self.path}: no {MANIFEST_NAME}; this is not an edgec bundle or it is incomplete")
        with open(manifest_path, "rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
        try:
            manifest = loads_bounded(raw, MAX_MANIFEST_BYTES)
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors too
            raise BundleError(f"{manifest_path}: not valid JSON or over a limit ({exc}); recompile the bundle") from None
        if not isinstance(manifest, dict):
            raise BundleError(f"{manifest_path}: expected a JSON object; recompile the bundle")
        version = manifest.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(
                f"{manifest_path}: schema_version {version!r}, this edgec reads {SCHEMA_VERSION}; "
                "recompile the bundle with this edgec or upgrade edgec"
            )
        validate_manifest(manifest, str(manifest_path))
        self.manifest: dict[str, Any] = manifest
        self.bundle_id = sha256_bytes(raw)

    @property
    def model_path(self) -> Path:
        """The model file on disk (inflated into the private cache first when the bundle stores it compressed).

        For tools that read a model by path (layer tables, estimates). What runs a model uses ``model_bytes``:
        bytes checked against their sha256 and handed to the runtime from the same buffer.
        """
        encoding = self.manifest.get("model_encoding")
        if not encoding:
            return self._inside(self.manifest["model_file"])
        self.model_bytes()
        return _cache_dir() / encoding["sha256"]

    def model_bytes(self) -> bytes:
        """The model's bytes, read once and checked against the manifest (inflated and checked when encoded)."""
        encoding = self.manifest.get("model_encoding")
        if not encoding:
            return self.read_file(self.manifest["model_file"])
        return inflate_model(self.read_file(encoding["file"]), encoding, f"{self.path}/{encoding['file']}")

    def _inside(self, rel: str) -> Path:
        """``rel`` under the bundle; refuses a path that leaves it (through a symbolic link)."""
        path = self.path / rel
        root = os.path.realpath(self.path)
        if os.path.commonpath([root, os.path.realpath(path)]) != root:
            raise BundleError(f"{path}: leads outside the bundle (a symbolic link); recompile or re-push the bundle")
        return path

    def read_file(self, rel: str) -> bytes:
        """The bytes of hashed file ``rel``, read once and checked against its size and sha256 in the manifest."""
        meta = self.manifest["files"].get(rel)
        path = self._inside(rel)
        if meta is None:
            raise BundleError(f"{path}: not listed in the manifest's files; recompile the bundle")
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            raise BundleError(f"{path}: listed in the manifest but missing; recompile or re-push the bundle") from None
        with os.fdopen(fd, "rb") as handle:
            # The size on disk first: a declared size is never a read length (it may be absurd).
            data = handle.read(meta["size"] + 1) if os.fstat(handle.fileno()).st_size == meta["size"] else None
        if data is None or len(data) != meta["size"] or sha256_bytes(data) != meta["sha256"]:
            raise BundleError(f"{path}: sha256 does not match the manifest (file altered or truncated); "
                              "recompile or re-push the bundle")
        return data

    @property
    def format(self) -> str:
        return self.manifest["format"]

    @property
    def inputs(self) -> list[dict]:
        return self.manifest["io"]["inputs"]

    @property
    def outputs(self) -> list[dict]:
        return self.manifest["io"]["outputs"]

    def check_files(self) -> None:
        """Raise BundleError naming the first file that is missing, altered, or not in the manifest."""
        files = self.manifest["files"]
        for rel, meta in sorted(files.items()):
            path = self._inside(rel)
            if not path.is_file():
                raise BundleError(f"{path}: listed in the manifest but missing; recompile or re-push the bundle")
            if path.stat().st_size != meta["size"] or sha256_file(path) != meta["sha256"]:
                raise BundleError(
                    f"{path}: sha256 does not match the manifest (file altered or truncated); "
                    "recompile or re-push the bundle"
                )
        for path in sorted(self.path.rglob("*")):
            rel = path.relative_to(self.path).as_posix()
            if path.is_file() and rel != MANIFEST_NAME and rel not in files and not rel.startswith(UNHASHED_PREFIXES):
                raise BundleError(f"{path}: not listed in the manifest; remove it or recompile the bundle")

    def reference(self) -> tuple[list, list]:
        """The stored reference inputs and outputs, in io order (each file read once, hashed, then parsed)."""
        ref = self.manifest["reference"]
        inputs = read_npz(self.read_file(ref["inputs"]), "i", self.inputs, f"{self.path}/{ref['inputs']}")
        outputs = read_npz(self.read_file(ref["outputs"]), "o", self.outputs, f"{self.path}/{ref['outputs']}")
        return inputs, outputs


def _npz_header(archive, member: str, entry: dict, where: str):
    """(shape, dtype) of ``member`` from its .npy header, checked against its io ``entry`` and its zip size."""
    import numpy as np

    info = archive.getinfo(member)
    with archive.open(member) as handle:
        version = np.lib.format.read_magic(handle)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(handle)
        header = handle.tell()
    want = entry.get("shape")
    if dtype.hasobject or fortran:
        raise ValueError(f"{member} holds Python objects or is Fortran-ordered")
    # Fixed dimensions past the batch must match the io signature. A model whose declared rank is not the rank it
    # produces (ddddocr's recogniser declares [1, ?] and returns [T, 1, C]) is checked by the byte bound alone.
    if want is not None and len(shape) == len(want) and any(
            w is not None and g != w for g, w in list(zip(shape, want))[1:]):
        raise ValueError(f"{member} has shape {list(shape)}, the io signature says {want}")
    nbytes = dtype.itemsize
    for dim in shape:
        nbytes *= dim
    if nbytes > MAX_REFERENCE_BYTES or info.file_size != header + nbytes:
        raise ValueError(f"{member} declares {nbytes} bytes of data (limit {MAX_REFERENCE_BYTES}; the archive "
                         f"member holds {info.file_size - header})")
    return shape, dtype


def read_npz(data: bytes, prefix: str, entries: list, where: str) -> list:
    """Arrays ``<prefix>0, <prefix>1, ...`` of an .npz held in ``data``, one per io entry; every header is checked
    against the io signature and the archive before any array is allocated."""
    import io
    import zipfile

    import numpy as np

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [f"{prefix}{k}.npy" for k in range(len(entries))]
            for member, entry in zip(members, entries):
                _npz_header(archive, member, entry, where)
            arrays = []
            for member in members:
                with archive.open(member) as handle:
                    arrays.append(np.lib.format.read_array(handle, allow_pickle=False))
            return arrays
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{where}: unreadable reference data ({exc}); recompile the bundle") from None


def check_reference(bundle: Bundle, produced: list) -> list[dict]:
    """Compare outputs a runtime produced for the reference inputs with the stored ones.

    Returns one record per output (name, ok, max_abs_diff, rel_diff, worst), judged by ``edgec.compare``
    (elementwise ``|a-b| <= atol + rtol * |ref|``) with the manifest's tolerances: ``atol`` is one number or
    one per output (quantized bundles carry wider ones: kernels differ between machines).
    """
    from edgec.compare import compare_outputs

    _, expected = bundle.reference()
    ref = bundle.manifest["reference"]
    atol = ref["atol"]
    atol = [float(a) for a in atol] if isinstance(atol, list) else float(atol)
    names = [meta["name"] for meta in bundle.outputs]
    records = []
    for record in compare_outputs(names, expected, produced, float(ref["rtol"]), atol):
        record["name"] = record.pop("output")
        for key in ("max_abs_diff", "rel_diff", "worst"):  # the agent answers in JSON: no infinities
            if record[key] == float("inf"):
                record[key] = None
                record.setdefault("detail", "non-finite values where the reference has finite ones")
        records.append(record)
    return records


def to_model_layout(array, entry: dict):
    """An array in the source's layout and float dtype -> what the model takes (io entry: ``permutation``,
    ``dtype``, int8/uint8 ``quantization``). Entries without those keys (ONNX bundles) pass arrays through."""
    import numpy as np

    array = np.asarray(array)
    perm = entry.get("permutation")
    if perm and len(perm) == array.ndim:
        array = array.transpose(perm)
    dtype = np.dtype(entry.get("dtype") or array.dtype)
    quant = entry.get("quantization")
    if quant and np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = np.clip(np.round(array / quant["scale"] + quant["zero_point"]), info.min, info.max)
    return np.ascontiguousarray(array.astype(dtype))


def from_model_layout(array, entry: dict):
    """The inverse of ``to_model_layout`` for an output: dequantized float32, in the source's layout."""
    import numpy as np

    array = np.asarray(array)
    quant = entry.get("quantization")
    if quant:
        array = (array.astype(np.float32) - quant["zero_point"]) * np.float32(quant["scale"])
    perm = entry.get("permutation")
    if perm and len(perm) == array.ndim:
        array = array.transpose(np.argsort(perm))
    return array


def _cache_dir() -> Path:
    """``$TMPDIR/edgec-models-<uid>``: made 0700 and refused unless it is a directory of ours that nobody else can
    write (another user could otherwise plant a model there)."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    path = Path(tempfile.gettempdir()) / (f"edgec-models-{uid}" if uid is not None else "edgec-models")
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise BundleError(f"{path}: cannot make the model cache ({exc}); set TMPDIR to a directory of yours") from None
    import stat

    if not stat.S_ISDIR(info.st_mode) or (uid is not None and (info.st_uid != uid or info.st_mode & 0o077)):
        raise BundleError(f"{path}: the model cache is not a private directory of this user (owner {info.st_uid}, "
                          f"mode {oct(info.st_mode & 0o777)}); remove it or set TMPDIR to a directory of yours")
    return path


def _inflate_bounded(stored: bytes, size: int, where: str) -> bytes:
    """zlib-inflate ``stored``, stopping as soon as the output would exceed ``size`` bytes."""
    import zlib

    inflater, parts, total, data = zlib.decompressobj(), [], 0, stored
    try:
        while data and not inflater.eof:
            chunk = inflater.decompress(data, min(1 << 20, size - total + 1))
            total += len(chunk)
            if total > size:
                raise BundleError(f"{where}: inflates to more than the declared {size} bytes; re-push or recompile "
                                  "the bundle")
            parts.append(chunk)
            data = inflater.unconsumed_tail
            if not chunk and not data:
                break
    except zlib.error as exc:
        raise BundleError(f"{where}: cannot inflate the model ({exc}); re-push or recompile the bundle") from None
    return b"".join(parts)


def inflate_model(stored: bytes, encoding: dict, where: str) -> bytes:
    """The inflated model of a zlib-encoded bundle, checked against ``encoding["sha256"]``.

    Inflated once into the private cache (``_cache_dir()/<sha256>``); a cached copy is read and hashed again on
    every use, and replaced when it does not match.
    """
    if encoding.get("codec") != "zlib":
        raise BundleError(f"{where}: model encoding {encoding.get('codec')!r} is not known to this edgec; "
                          "upgrade edgec on this machine")
    sha, size = encoding["sha256"], encoding["size"]
    if not SHA256_RE.fullmatch(str(sha)):
        raise BundleError(f"{where}: model_encoding.sha256 is not 64 hex digits; recompile the bundle")
    target = _cache_dir() / sha
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            cached = handle.read(size + 1) if os.fstat(handle.fileno()).st_size == size else b""
        if len(cached) == size and sha256_bytes(cached) == sha:
            return cached
    except OSError:
        pass
    data = _inflate_bounded(stored, size, where)
    if len(data) != size or sha256_bytes(data) != sha:
        raise BundleError(f"{where}: inflated model does not match its sha256; re-push or recompile the bundle")
    tmp = target.with_name(f".{sha}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except OSError:  # a full or read-only cache costs only the next inflation
        if tmp.exists():
            tmp.unlink()
    return data


def deflate_model(bundle_dir: Path, model_file: str) -> dict:
    """Replace ``bundle_dir/model_file`` by a zlib-compressed copy; returns the manifest's ``model_encoding``."""
    import zlib

    raw_path = bundle_dir / model_file
    raw = raw_path.read_bytes()
    stored = f"{model_file}.zlib"
    (bundle_dir / stored).write_bytes(zlib.compress(raw, 9))
    raw_path.unlink()
    return {"codec": "zlib", "file": stored, "sha256": sha256_bytes(raw), "size": len(raw)}


def write_atomically(out_dir: str | os.PathLike, fill, force: bool = False) -> Path:
    """Build a directory in a temporary sibling, then rename it into place.

    ``fill(tmp_dir)`` writes the contents. An interrupted build leaves only a ``.tmp-*`` directory that is
    removed on the way out; an existing ``out_dir`` is refused unless ``force``, and then replaced only once the
    new one is complete.
    """
    out = Path(out_dir)
    if out.exists() and not force:
        raise UsageError(f"{out}: already exists; choose another -o or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        fill(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a bundle is an ordinary directory
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, trash / "old")
            os.rename(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
