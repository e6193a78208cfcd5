"""Bundles: a directory holding a model, ``manifest.json`` and reference inputs/outputs that prove it.

Layout of a bundle directory::

    manifest.json                 this module's schema (``SCHEMA_VERSION``); see README "Bundle format"
    model.onnx | model.tflite     the model the device runs
    reference/inputs.npz          arrays ``i0, i1, ...`` in the order of ``manifest["io"]["inputs"]``
    reference/outputs.npz         arrays ``o0, o1, ...`` the model produced for them on the compiling machine
    logs/compile.log              third-party console output of the compile (not hashed, not part of the proof)

A bundle for a storage-bound device may hold its model deflated: ``manifest["model_encoding"]`` is then
``{"codec": "zlib", "file": "model.onnx.zlib", "sha256": ..., "size": ...}`` (sha256 and size of the inflated
model) and ``model_path`` inflates it once into a cache directory, checking that sha256.

``manifest["files"]`` maps every file but the manifest and ``logs/`` to its sha256 and size. The bundle's
identity (``bundle_id``) is the sha256 of the manifest bytes, so it changes when any hashed file changes.

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

__all__ = [
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "Bundle",
    "check_reference",
    "deflate_model",
    "from_model_layout",
    "inflate_model",
    "sha256_bytes",
    "sha256_file",
    "to_model_layout",
    "write_atomically",
]

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
UNHASHED_PREFIXES = ("logs/",)


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
        raw = manifest_path.read_bytes()
        try:
            manifest = json.loads(raw)
        except ValueError as exc:
            raise BundleError(f"{manifest_path}: not valid JSON ({exc}); recompile the bundle") from None
        if not isinstance(manifest, dict):
            raise BundleError(f"{manifest_path}: expected a JSON object; recompile the bundle")
        version = manifest.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(
                f"{manifest_path}: schema_version {version!r}, this edgec reads {SCHEMA_VERSION}; "
                "recompile the bundle with this edgec or upgrade edgec"
            )
        for key in ("format", "model_file", "io", "files", "reference"):
            if key not in manifest:
                raise BundleError(f"{manifest_path}: missing key {key!r}; recompile the bundle")
        self.manifest: dict[str, Any] = manifest
        self.bundle_id = sha256_bytes(raw)

    @property
    def model_path(self) -> Path:
        """The model file to load (inflated first when the bundle stores it compressed)."""
        encoding = self.manifest.get("model_encoding")
        if not encoding:
            return self.path / self.manifest["model_file"]
        return inflate_model(self.path / encoding["file"], encoding, self.manifest["model_file"])

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
            path = self.path / rel
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
        """The stored reference inputs and outputs, in io order."""
        import numpy as np

        ref = self.manifest["reference"]
        with np.load(self.path / ref["inputs"], allow_pickle=False) as data:
            inputs = [data[f"i{k}"] for k in range(len(self.inputs))]
        with np.load(self.path / ref["outputs"], allow_pickle=False) as data:
            outputs = [data[f"o{k}"] for k in range(len(self.outputs))]
        return inputs, outputs


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


def inflate_model(stored: Path, encoding: dict, name: str) -> Path:
    """Inflate a zlib-compressed model into ``$TMPDIR/edgec-models/<sha256>/<name>`` (once), checking its sha256."""
    import zlib

    if encoding.get("codec") != "zlib":
        raise BundleError(f"{stored}: model encoding {encoding.get('codec')!r} is not known to this edgec; "
                          "upgrade edgec on this machine")
    target = Path(tempfile.gettempdir()) / "edgec-models" / encoding["sha256"] / name
    if target.is_file() and target.stat().st_size == encoding["size"]:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    inflater, digest = zlib.decompressobj(), hashlib.sha256()
    tmp = target.with_name(f".{name}.{os.getpid()}.tmp")
    try:
        with open(stored, "rb") as src, open(tmp, "wb") as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                data = inflater.decompress(block)
                digest.update(data)
                dst.write(data)
            tail = inflater.flush()
            digest.update(tail)
            dst.write(tail)
    except (OSError, zlib.error) as exc:
        tmp.unlink(missing_ok=True)
        raise BundleError(f"{stored}: cannot inflate the model ({exc}); re-push or recompile the bundle") from None
    if digest.hexdigest() != encoding["sha256"]:
        tmp.unlink(missing_ok=True)
        raise BundleError(f"{stored}: inflated model does not match its sha256; re-push or recompile the bundle")
    os.replace(tmp, target)
    return target


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
