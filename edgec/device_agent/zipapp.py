"""The agent as one self-contained file: ``edgec-agent-<sha256[:16]>.pyz``.

It holds ``edgec/__init__.py``, ``errors.py``, ``registry.py``, ``bundle.py``, ``compare.py``, ``manifest.py``,
``runtimes/`` and ``device_agent/`` (nothing of
the compiler) and a ``__main__.py`` that runs the agent's command line. The archive is built byte for byte
the same from the same sources (sorted entries, fixed timestamps and modes, stored uncompressed), so its name,
the hash of its content, is also the agent's version: a device that already holds that file needs no copy.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import tempfile
import zipfile
from pathlib import Path

__all__ = ["agent_version", "build_zipapp", "zipapp_bytes", "zipapp_name"]

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the edgec package directory
SHIPPED = ("__init__.py", "errors.py", "registry.py", "bundle.py", "compare.py", "manifest.py", "runtimes", "device_agent")
MAIN = b"""# edgec device agent: python3 edgec-agent-HASH.pyz {info,check,bench,serve} ...
import os
import sys

# numpy only prepares inputs and statistics here: its BLAS thread pool would spin up at import (0.09 CPU-s
# measured) and sit beside the runtime's own threads while they are timed.
for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(name, "1")

from edgec.device_agent.cli import main

sys.exit(main())
"""
SHEBANG = b"#!/usr/bin/env python3\n"
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _sources() -> list[tuple[str, Path]]:
    """(archive name, file) for every shipped source file, sorted."""
    files = []
    for entry in SHIPPED:
        path = PACKAGE_ROOT / entry
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        files.extend((f"edgec/{p.relative_to(PACKAGE_ROOT).as_posix()}", p) for p in found)
    return sorted(files)


def zipapp_bytes() -> bytes:
    """The archive's bytes: identical sources give identical bytes."""
    buffer = io.BytesIO()
    buffer.write(SHEBANG)
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        entries = [("__main__.py", MAIN)] + [(name, path.read_bytes()) for name, path in _sources()]
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.create_system = 3  # unix, whatever the building machine is
            archive.writestr(info, data)
    return buffer.getvalue()


def zipapp_name(data: bytes) -> str:
    return f"edgec-agent-{hashlib.sha256(data).hexdigest()[:16]}.pyz"


def build_zipapp(dest_dir: str | os.PathLike) -> Path:
    """Write the agent into ``dest_dir`` (reusing an identical file already there) and return its path."""
    data = zipapp_bytes()
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / zipapp_name(data)
    if target.is_file() and target.stat().st_size == len(data) and target.read_bytes() == data:
        return target
    fd, tmp = tempfile.mkstemp(prefix=".edgec-agent-", suffix=".tmp", dir=dest)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


@functools.lru_cache(maxsize=1)
def agent_version() -> str:
    """sha256[:16] of the running agent's archive; from source, of the archive these sources would build."""
    archive = getattr(getattr(__spec__, "loader", None), "archive", None)
    if archive and os.path.isfile(archive):
        with open(archive, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()[:16]
    return hashlib.sha256(zipapp_bytes()).hexdigest()[:16]
