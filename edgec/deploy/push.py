"""Put bundles and the agent on a device: content-addressed, verified on the device, renamed into place.

On the device::

    ~/.edgec/bundles/<bundle_id>/        one directory per bundle (bundle_id = sha256 of manifest.json)
    ~/.edgec/bundles/.tmp-<id16>-<rnd>/  an upload in progress; never used as a bundle
    ~/.edgec/agent/edgec-agent-<sha16>.pyz

A bundle directory exists under its final name only once every file was uploaded and its sha256 checked on the
device (``sha256sum -c``), so an interrupted push never leaves a bundle that looks complete, and the bundles
pushed before stay usable. Pushing a bundle that is already there sends no model bytes. Leftover ``.tmp-*``
uploads older than an hour are removed by later pushes.
"""

from __future__ import annotations

import posixpath
import secrets
import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgec.bundle import MANIFEST_NAME, Bundle, sha256_file
from edgec.deploy.ssh import NETWORK_ERRORS, Connection, SftpWriteError
from edgec.errors import BundleError, DeviceError, TransferError

__all__ = ["PushReport", "install_agent", "push_bundle", "remote_home"]

STALE_MINUTES = 60


@dataclass
class PushReport:
    """What a push did: ``bytes_sent`` is 0 when the bundle was already on the device."""

    bundle_id: str
    device: str
    remote_dir: str
    already_there: bool
    bytes_sent: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def remote_home(conn: Connection) -> str:
    """The device user's home as its SFTP server sees it (the directory relative SFTP paths start from)."""
    try:
        return conn.sftp().normalize(".")
    except NETWORK_ERRORS as exc:
        raise DeviceError(f"{conn.target.label}: cannot resolve the home directory over SFTP ({exc})") from None


def _exists(conn: Connection, path: str) -> bool:
    try:
        conn.sftp().stat(path)
        return True
    except FileNotFoundError:
        return False
    except NETWORK_ERRORS as exc:
        raise DeviceError(f"{conn.target.label}: cannot stat {path} ({exc})") from None


def _shell(conn: Connection, command: str, what: str, timeout: float = 60) -> str:
    result = conn.run(command, timeout=timeout, what=what)
    if result.exit_code != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise DeviceError(f"{conn.target.label}: {what} failed (exit {result.exit_code}: "
                          f"{detail[-1] if detail else 'no output'})")
    return result.stdout


def _free_bytes(conn: Connection, directory: str, setup: str = "", timeout: float = 60) -> int:
    """Bytes free where ``directory`` lives (``df -Pk``), after running the shell ``setup`` in the same exec."""
    out = _shell(conn, f"{setup}df -Pk {shlex.quote(directory)} | tail -n 1", "df", timeout=timeout)
    try:
        return int(out.split()[3]) * 1024
    except (IndexError, ValueError):
        raise DeviceError(f"{conn.target.label}: cannot read free space of {directory} from `df -Pk`: {out!r}") from None


def _prepare_store(conn: Connection, store: str, need: int, dirs: list[str]) -> None:
    """Create the store and the upload's directories, drop stale uploads, and refuse early when the files cannot
    fit: one command, since each round trip costs a fraction of a second on a slow link."""
    q = shlex.quote(store)
    setup = (f"mkdir -p {' '.join(shlex.quote(d) for d in [store, *dirs])} && "
             f"find {q} -maxdepth 1 -name '.tmp-*' -mmin +{STALE_MINUTES} -exec rm -rf {{}} + ; ")
    free = _free_bytes(conn, store, setup)
    if free < need:
        raise _disk_full(conn, store, need, free)


def _disk_full(conn: Connection, store: str, need: int, free: int) -> TransferError:
    return TransferError(
        f"{conn.target.label}: not enough disk space in {store}: need {_mb(need)}, {_mb(free)} free; "
        "free some space on the device (old bundles live in ~/.edgec/bundles) and push again"
    )


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} bytes"


def _upload_verified(conn: Connection, store: str, files: list[tuple[Path, str, str]], tmp: str, progress) -> int:
    """Upload ``(local, relative, sha256)`` files under ``tmp`` and check every sha256 on the device."""
    _prepare_store(conn, store, sum(local.stat().st_size for local, _, _ in files),
                   sorted({posixpath.dirname(posixpath.join(tmp, rel)) for _, rel, _ in files}))
    total = sum(local.stat().st_size for local, _, _ in files)
    done = 0
    for local, rel, _ in files:
        size = local.stat().st_size
        try:
            conn.put(local, posixpath.join(tmp, rel),
                     progress=(lambda sent, _size, base=done: progress(base + sent, total)) if progress else None)
        except SftpWriteError as exc:
            free = _free_bytes(conn, store, timeout=conn.options.stall_timeout)  # the link may be the problem
            if free < total - done - exc.sent:
                raise _disk_full(conn, store, total - done, free + exc.sent) from None
            raise TransferError(f"{conn.target.label}: upload of {rel} failed ({exc}); push again") from None
        done += size
    listing = "".join(f"{sha}  {rel}\n" for _, rel, sha in files)
    check = conn.run(f"cd {shlex.quote(tmp)} && sha256sum -c --strict --quiet <<'EDGEC_EOF'\n{listing}EDGEC_EOF",
                     timeout=max(60.0, total / 5e6), what="sha256sum")
    if check.exit_code != 0:
        detail = (check.stdout + check.stderr).strip().splitlines()
        raise TransferError(f"{conn.target.label}: uploaded files fail their sha256 check on the device "
                            f"({detail[0] if detail else 'exit ' + str(check.exit_code)}); push again")
    return total


def _remove(conn: Connection, path: str) -> None:
    """Best effort: the connection may be the thing that failed; a later push removes stale uploads."""
    if conn.alive:
        try:
            conn.run(f"rm -rf {shlex.quote(path)}", timeout=30, what="rm")
        except DeviceError:
            pass


def _bundle_files(bundle: Bundle) -> list[tuple[Path, str, str]]:
    files = [(bundle.path / MANIFEST_NAME, MANIFEST_NAME, bundle.bundle_id)]
    for rel, meta in sorted(bundle.manifest["files"].items()):
        parts = rel.split("/")
        if rel.startswith("/") or ".." in parts or any(c in rel for c in "\n\\'\""):
            raise BundleError(f"{bundle.path}: manifest lists an unsafe file name {rel!r}; recompile the bundle")
        files.append((bundle.path / rel, rel, meta["sha256"]))
    return files


def push_bundle(conn: Connection, bundle: Bundle | str | Path, progress=None) -> PushReport:
    """Make ``bundle`` available on the device under ``~/.edgec/bundles/<bundle_id>``.

    Args:
        conn: an open connection.
        bundle: a Bundle or its directory; its files are checked locally first.
        progress: optional ``progress(sent, total)`` callable.

    Raises:
        BundleError: the local bundle is damaged.
        TransferError: the upload stalled, broke off, failed its check, or the disk is full.
    """
    start = time.monotonic()
    bundle = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
    store = posixpath.join(remote_home(conn), ".edgec", "bundles")
    final = posixpath.join(store, bundle.bundle_id)
    label = conn.target.name or conn.target.label
    if _exists(conn, posixpath.join(final, MANIFEST_NAME)):
        return PushReport(bundle.bundle_id, label, final, True, 0, time.monotonic() - start)
    bundle.check_files()
    files = _bundle_files(bundle)
    tmp = posixpath.join(store, f".tmp-{bundle.bundle_id[:16]}-{secrets.token_hex(4)}")
    sent_before = conn.bytes_sent
    try:
        _upload_verified(conn, store, files, tmp, progress)
        _rename_into_place(conn, tmp, final)
    except BaseException:
        _remove(conn, tmp)
        raise
    return PushReport(bundle.bundle_id, label, final, False, conn.bytes_sent - sent_before,
                      time.monotonic() - start)


def _rename_into_place(conn: Connection, tmp: str, final: str) -> None:
    try:
        conn.sftp().posix_rename(tmp, final)
    except NETWORK_ERRORS:
        # Another push of the same content won the race: its copy is as good as ours.
        if not _exists(conn, posixpath.join(final, MANIFEST_NAME)) and not _exists(conn, final):
            raise TransferError(f"{conn.target.label}: cannot rename {tmp} to {final}; push again") from None
        _remove(conn, tmp)


def install_agent(conn: Connection, agent: Path) -> str:
    """Make the agent zipapp available as ``~/.edgec/agent/<its name>``; returns its path on the device.

    The name carries the hash of the content, so an existing file of that name is the same agent.
    """
    agent_dir = posixpath.join(remote_home(conn), ".edgec", "agent")
    final = posixpath.join(agent_dir, agent.name)
    if _exists(conn, final):
        return final
    digest = sha256_file(agent)
    tmp_name = f".tmp-{secrets.token_hex(4)}-{agent.name}"
    try:
        _upload_verified(conn, agent_dir, [(agent, tmp_name, digest)], agent_dir, None)
        _rename_into_place(conn, posixpath.join(agent_dir, tmp_name), final)
    except BaseException:
        _remove(conn, posixpath.join(agent_dir, tmp_name))
        raise
    return final
