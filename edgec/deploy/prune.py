"""Free a device's disk: remove bundles not pushed or benchmarked lately, stale partial uploads and old agents.

Pushes accumulate on a device (a sweep pushes every variant), and SD cards are small. A bundle's directory
mtime is when it was last pushed or benchmarked (``push_bundle`` touches a bundle that is already there), so
"keep the N most recent" keeps what is in use. Nothing here runs on the device but ``stat``, ``du`` and
``rm`` (GNU or busybox), in two commands: one to list, one to remove.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import time
from dataclasses import asdict, dataclass, field

from edgec.deploy.push import PARTIAL_MINUTES, STALE_MINUTES, remote_home
from edgec.deploy.ssh import Connection
from edgec.errors import DeviceError, UsageError

__all__ = ["PruneReport", "prune_device", "store_usage"]


@dataclass
class PruneReport:
    """What a prune removed (or, with ``dry_run``, would remove) on one device."""

    device: str
    removed: list[str] = field(default_factory=list)  # bundle ids, ".partial-..." and agent file names
    kept: list[str] = field(default_factory=list)  # bundle ids
    freed_bytes: int = 0
    dry_run: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Entry:
    name: str
    mtime: int
    kib: int


def _list(conn: Connection, directory: str) -> list[_Entry]:
    """``mtime kib name`` of every entry of ``directory`` (hidden ones included), in one command.

    Entries end with a NUL, not a newline: a name may hold a newline (and then forge a line naming another
    path to remove); an entry that does not parse as ``mtime kib name`` with a plain name is left alone.
    """
    q = shlex.quote(directory)
    script = (f'cd {q} 2>/dev/null || exit 0; for e in * .[!.]*; do [ -e "$e" ] || continue; '
              'printf "%s %s %s\\0" "$(stat -c %Y "$e")" "$(du -sk "$e" | head -n 1 | cut -f1)" "$e"; done')
    result = conn.run(script, timeout=120, what="list the bundle store")
    if result.exit_code != 0:
        raise DeviceError(f"{conn.target.label}: cannot list {directory} (exit {result.exit_code}: "
                          f"{result.stderr.strip()[-200:] or 'no output'})")
    entries = []
    for record in result.stdout.split("\0"):
        parts = record.split(" ", 2)
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit() or parts[2] in ("", ".", "..") \
                or "/" in parts[2]:
            continue
        entries.append(_Entry(parts[2], int(parts[0]), int(parts[1])))
    return entries


def store_usage(conn: Connection) -> dict:
    """How much of the device's disk edgec's bundle store holds: bundles, and partial or in-progress uploads."""
    listed = _list(conn, posixpath.join(remote_home(conn), ".edgec", "bundles"))
    bundles = [e for e in listed if not e.name.startswith(".")]
    return {"bundles": len(bundles), "bundle_bytes": 1024 * sum(e.kib for e in bundles),
            "partial_bytes": 1024 * sum(e.kib for e in listed if e.name.startswith("."))}


def _live_ids(conn: Connection, edgec_dir: str) -> set[str]:
    """The bundle ``active`` names and those of its activation history (rollback targets): never pruned."""
    q = shlex.quote(edgec_dir)
    result = conn.run(f"readlink {q}/active; cat {q}/activations.json", timeout=60, what="read the active bundle")
    return set(re.findall(r"\b[0-9a-f]{64}\b", result.stdout))


def _stale(entry: _Entry, now: float, minutes: float) -> bool:
    return (now - entry.mtime) / 60 > minutes


def prune_device(conn: Connection, keep: int, older_than_days: float | None = None, current_agent: str | None = None,
                 dry_run: bool = False, now: float | None = None) -> PruneReport:
    """Remove all but the ``keep`` most recently used bundles (only those unused for ``older_than_days``, when
    given), partial uploads untouched for a day, and agent zipapps other than ``current_agent``. The active
    bundle and those of its activation history (``edgec rollback`` targets) are always kept.

    Raises:
        UsageError: ``keep`` is negative.
        DeviceError: the store cannot be listed or cleaned.
    """
    if keep < 0:
        raise UsageError(f"--keep {keep}: must be >= 0")
    now = time.time() if now is None else now
    home = remote_home(conn)
    store, agents = posixpath.join(home, ".edgec", "bundles"), posixpath.join(home, ".edgec", "agent")
    report = PruneReport(conn.target.name or conn.target.label, dry_run=dry_run)
    doomed: list[tuple[str, _Entry]] = []
    listed = _list(conn, store)
    live = _live_ids(conn, posixpath.join(home, ".edgec"))
    bundles = sorted((e for e in listed if not e.name.startswith(".")), key=lambda e: (-e.mtime, e.name))
    for rank, entry in enumerate(bundles):
        unused_days = (now - entry.mtime) / 86400
        if entry.name in live or rank < keep or (older_than_days is not None and unused_days < older_than_days):
            report.kept.append(entry.name)
        else:
            doomed.append((store, entry))
    # Uploads in progress are left alone: a partial one waits a day for a push to continue it.
    doomed += [(store, e) for e in listed if e.name.startswith(".") and _stale(e, now, PARTIAL_MINUTES)]
    if current_agent is not None:
        doomed += [(agents, e) for e in _list(conn, agents)
                   if (e.name.startswith(".tmp-") and _stale(e, now, STALE_MINUTES))
                   or (e.name.startswith("edgec-agent-") and e.name != current_agent)]
    report.removed = [e.name for _, e in doomed]
    report.freed_bytes = 1024 * sum(e.kib for _, e in doomed)
    if doomed and not dry_run:
        paths = " ".join(shlex.quote(posixpath.join(d, e.name)) for d, e in doomed)
        result = conn.run(f"rm -rf -- {paths}", timeout=300, what="rm")
        if result.exit_code != 0:
            raise DeviceError(f"{conn.target.label}: removing old bundles failed (exit {result.exit_code}: "
                              f"{result.stderr.strip()[-200:] or 'no output'})")
    return report
