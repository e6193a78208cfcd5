"""The device's bundle store and which bundle is live: an ``active`` symlink switched by rename(2), and a history.

Layout (``EDGEC_DIR`` is ``~/.edgec`` on a device; ``edgec.deploy.push`` fills ``bundles/``)::

    EDGEC_DIR/bundles/<bundle_id>/     complete, sha256-checked bundles (renamed into place by a push)
    EDGEC_DIR/active -> bundles/<id>   the live bundle: a relative symlink, replaced atomically
    EDGEC_DIR/activations.json         the last ``keep`` activations, newest last (written to a temp + rename)

Activation checks every file's sha256 first, then writes a new symlink under a temporary name and renames it
over ``active``: rename(2) is atomic, so a process killed at any point leaves ``active`` naming either the old
or the new bundle, both complete and verified, never a half-switched pointer. A stray ``.active-*`` link left
by a kill is removed by the next activation. The history is advisory (rollback targets); ``active`` is the truth.
Standard library only, Python 3.9.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from edgec.bundle import Bundle
from edgec.errors import BundleError, UsageError

__all__ = ["ACTIVE", "HISTORY", "KEEP", "activate", "active_id", "bundle_dir", "deactivate", "history", "rollback"]

ACTIVE = "active"
HISTORY = "activations.json"
KEEP = 5


def bundle_dir(edgec_dir, bundle_id: str) -> Path:
    """``EDGEC_DIR/bundles/<bundle_id>``; refuses anything that is not a plain hex id."""
    if not bundle_id or not all(c in "0123456789abcdef" for c in bundle_id) or len(bundle_id) > 64:
        raise UsageError(f"bundle id {bundle_id!r}: expected the hex sha256 of a bundle's manifest")
    return Path(edgec_dir) / "bundles" / bundle_id


def _resolve(edgec_dir, ref: str) -> str:
    """A full bundle id from an id, an id prefix of at least 8 characters, or a bundle directory."""
    if os.sep in ref or ref.startswith("."):
        return Bundle(ref).bundle_id
    store = Path(edgec_dir) / "bundles"
    if len(ref) == 64:
        return ref
    found = sorted(p.name for p in store.glob(f"{ref}*") if p.is_dir()) if len(ref) >= 8 else []
    if len(found) != 1:
        raise UsageError(f"bundle {ref!r}: {'no' if not found else 'more than one'} bundle in {store} matches; "
                         "give the full id (edgec farm check lists them)")
    return found[0]


def active_id(edgec_dir) -> str | None:
    """The id of the live bundle, or None when nothing was ever activated."""
    try:
        target = os.readlink(Path(edgec_dir) / ACTIVE)
    except (FileNotFoundError, OSError):
        return None
    return os.path.basename(target.rstrip("/")) or None


def history(edgec_dir) -> list[dict]:
    """Past activations, newest last: ``{"bundle_id", "at"}``. Empty when missing or unreadable."""
    try:
        doc = json.loads((Path(edgec_dir) / HISTORY).read_text())
    except (OSError, ValueError):
        return []
    return [e for e in doc if isinstance(e, dict) and isinstance(e.get("bundle_id"), str)] if isinstance(doc, list) else []


def _write_json(path: Path, doc) -> None:
    tmp = path.with_name(f".{path.name}-{secrets.token_hex(4)}")
    with open(tmp, "w") as handle:
        json.dump(doc, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sweep_strays(edgec_dir: Path) -> None:
    """Remove ``.active-*`` links a kill left half made (every activation does, even one that changes nothing)."""
    for stray in edgec_dir.glob(".active-*"):
        try:
            stray.unlink()
        except OSError:
            pass


def _switch(edgec_dir: Path, bundle_id: str) -> None:
    tmp = edgec_dir / f".active-{secrets.token_hex(4)}"
    os.symlink(f"bundles/{bundle_id}", tmp)
    os.replace(tmp, edgec_dir / ACTIVE)  # the one atomic step
    _fsync_dir(edgec_dir)


def activate(edgec_dir, ref: str, keep: int = KEEP) -> dict:
    """Make bundle ``ref`` (id, id prefix or directory in the store) the live one, after checking its hashes.

    Returns ``{"active", "previous", "changed"}``. Raises BundleError (missing, altered) or UsageError.
    """
    edgec_dir = Path(edgec_dir)
    bundle_id = _resolve(edgec_dir, ref)
    path = bundle_dir(edgec_dir, bundle_id)
    bundle = Bundle(path)
    if bundle.bundle_id != bundle_id:
        raise BundleError(f"{path}: its manifest's sha256 is {bundle.bundle_id[:16]}, not the directory's name; "
                          "push the bundle again")
    bundle.check_files()
    _sweep_strays(edgec_dir)
    previous = active_id(edgec_dir)
    changed = previous != bundle_id
    if changed:
        _switch(edgec_dir, bundle_id)
        os.utime(path)  # in use: `edgec farm prune` keeps recently used bundles
    past = [e for e in history(edgec_dir) if e["bundle_id"] != bundle_id]
    past.append({"bundle_id": bundle_id, "at": time.time()})
    _write_json(edgec_dir / HISTORY, past[-max(keep, 1):])
    return {"active": bundle_id, "previous": previous, "changed": changed}


def rollback(edgec_dir, to: str | None = None, keep: int = KEEP) -> dict:
    """Activate ``to``, or the most recent earlier activation whose bundle is still there and intact."""
    edgec_dir = Path(edgec_dir)
    if to is not None:
        return activate(edgec_dir, to, keep)
    current = active_id(edgec_dir)
    for entry in reversed(history(edgec_dir)):
        if entry["bundle_id"] == current:
            continue
        try:
            return activate(edgec_dir, entry["bundle_id"], keep)
        except (BundleError, UsageError):
            continue  # pruned or damaged since: try the one before
    raise UsageError(f"{edgec_dir}: no earlier activated bundle to roll back to (history: "
                     f"{len(history(edgec_dir))} entries); give --to BUNDLE_ID")


def deactivate(edgec_dir) -> dict:
    """Remove the ``active`` pointer (a first deployment that failed has nothing to roll back to)."""
    previous = active_id(edgec_dir)
    try:
        os.unlink(Path(edgec_dir) / ACTIVE)
    except FileNotFoundError:
        pass
    return {"active": None, "previous": previous, "changed": previous is not None}
