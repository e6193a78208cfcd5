"""Files that travel between the driver and cluster nodes, by content hash, through Ray's object store.

A source model, calibration data or a bundle is packed once on the driver (a file as its bytes, a directory as a
tar), put in the object store once per content hash, and materialised on a node into a private cache keyed by that
hash, so a node that already holds it does not write it again. Bundles come back as tars and are unpacked on the
driver with the ``data`` filter (plain files and directories only, nothing outside the target) before the atomic
rename that every bundle write uses.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgec.errors import BundleError

__all__ = ["Payload", "cache_dir", "pack", "unpack_into"]


@dataclass(frozen=True)
class Payload:
    """A file or directory as bytes: its name, whether it is a tar of a directory, and its content hash."""

    name: str
    is_dir: bool
    sha256: str
    data: bytes

    def materialize(self) -> Path:
        """The payload as a path in this node's cache (written once per hash, atomically)."""
        final = cache_dir() / self.sha256
        target = final / self.name
        if target.exists():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.sha256[:12]}.tmp-", dir=cache_dir()))
        try:
            if self.is_dir:
                unpack_into(self.data, tmp / self.name)
            else:
                (tmp / self.name).write_bytes(self.data)
            try:
                os.rename(tmp, final)
            except OSError:  # another task on this node won the race: its copy has the same bytes
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target


def cache_dir() -> Path:
    """``$TMPDIR/edgec-cluster-<uid>``, private to this user (created 0700; refused if another user owns it)."""
    path = Path(tempfile.gettempdir()) / f"edgec-cluster-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    if info.st_uid != os.getuid() or (info.st_mode & 0o077) or path.is_symlink():
        raise BundleError(f"{path}: the cluster cache must be a private directory of this user (0700); remove it")
    return path


def pack(path: str | os.PathLike) -> Payload:
    """A file's bytes, or a directory as an uncompressed tar with sorted entries (same tree -> same hash)."""
    path = Path(path)
    if path.is_dir():
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for item in sorted(path.rglob("*")):
                info = tar.gettarinfo(str(item), arcname=str(item.relative_to(path)))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                if item.is_file() and not item.is_symlink():
                    with open(item, "rb") as handle:
                        tar.addfile(info, handle)
                elif item.is_dir():
                    tar.addfile(info)
        data = buffer.getvalue()
    else:
        data = path.read_bytes()
    return Payload(name=path.name, is_dir=path.is_dir(), sha256=hashlib.sha256(data).hexdigest(), data=data)


def unpack_into(data: bytes, out: Path) -> None:
    """Unpack a tar made by ``pack`` into ``out`` (created if missing); links, devices and paths leaving ``out``
    are refused."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            root = out.resolve()
            for member in tar.getmembers():
                inside = (root / member.name).resolve()
                if not (member.isfile() or member.isdir()) or (inside != root and root not in inside.parents):
                    raise BundleError(f"a tar from the cluster holds {member.name!r}, which is not a plain file "
                                      "inside the bundle")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(out, filter="data")
            else:  # Python releases before the extraction filters: the members were checked above
                tar.extractall(out)
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"a tar from the cluster could not be unpacked into {out}: {exc}") from None
