"""Put bundles and the agent on a device: content-addressed, verified on the device, renamed into place.

On the device::

    ~/.edgec/bundles/<bundle_id>/           one directory per bundle (bundle_id = sha256 of manifest.json)
    ~/.edgec/bundles/.partial-<bundle_id>/  an upload in progress or cut off; never used as a bundle
    ~/.edgec/agent/edgec-agent-<sha16>.pyz

A bundle directory exists under its final name only once every file was uploaded and its sha256 checked on the
device (``sha256sum -c``), so an interrupted push never leaves a bundle that looks complete, and the bundles
pushed before stay usable. Pushing a bundle that is already there sends no model bytes.

A link that breaks mid-push (the stall watchdog fired, the connection was reset) is reconnected and the upload
resumes where the device's copy ends, up to ``SshOptions.transfer_retries`` times: under heavy packet loss TCP's
retransmission backoff alone can outlast any stall window, and a fresh connection starts with a fresh timer.
Nothing is resumed after a deadline, a refused host key, a full disk or a failed sha256 check. When every retry
fails, the partial upload stays on the device under a name fixed by the bundle's content, and the next push of
that bundle continues it (as ``rsync --partial`` would); so does a push stopped by Ctrl-C. Other failures remove
it. Partial uploads untouched for a day, and the agent's ``.tmp-*`` uploads after an hour, are removed by later
pushes. Two pushes of the same bundle to one device at the same time write the same bytes to the same offsets;
if one of them truncates a file the other is checking, that check fails and says to push again.
"""

from __future__ import annotations

import logging
import posixpath
import secrets
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgec.bundle import MANIFEST_NAME, Bundle, sha256_file
from edgec.deploy.ssh import Connection, SftpWriteError
from edgec.errors import BundleError, DeviceError, DeviceTimeoutError, HostKeyError, TransferError

__all__ = ["PushReport", "install_agent", "push_bundle", "remote_home"]

log = logging.getLogger(__name__)

STALE_MINUTES = 60  # the agent's .tmp-* uploads
PARTIAL_MINUTES = 24 * 60  # a bundle's .partial-* upload, kept for the next push to continue


@dataclass
class PushReport:
    """What a push did: ``bytes_sent`` is 0 when the bundle was already on the device."""

    bundle_id: str
    device: str
    remote_dir: str
    already_there: bool
    bytes_sent: int
    seconds: float
    resumes: int = 0  # times the link broke and the upload went on over a fresh connection
    resumed_at: list[int] = field(default_factory=list)  # bundle byte offsets where resumed uploads began
    continued_partial: bool = False  # it went on from a partial upload an earlier push left on the device

    def to_dict(self) -> dict:
        return asdict(self)


def remote_home(conn: Connection) -> str:
    """The device user's home as its SFTP server sees it (the directory relative SFTP paths start from)."""
    return conn.home()


def _exists(conn: Connection, path: str) -> bool:
    return conn.stat(path) is not None


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
    q, made = shlex.quote(store), " ".join(shlex.quote(d) for d in [store, *dirs])
    setup = (f"mkdir -p {made} && touch {made} && "
             f"find {q} -maxdepth 1 -name '.tmp-*' -mmin +{STALE_MINUTES} -exec rm -rf {{}} + ; "
             f"find {q} -maxdepth 1 -name '.partial-*' -mmin +{PARTIAL_MINUTES} -exec rm -rf {{}} + ; ")
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


class _Upload:
    """Upload ``(local, relative, sha256)`` files under ``tmp`` and check every sha256 on the device.

    ``run(resuming=True)`` continues an upload that a broken link cut: each file restarts where the device's copy
    ends (what the device wrote is a prefix: SFTP writes are applied in order), and the sha256 check at the end
    covers every byte whichever connection sent it. Progress never goes backwards.
    """

    def __init__(self, conn: Connection, store: str, files: list[tuple[Path, str, str]], tmp: str, progress):
        self.conn, self.store, self.files, self.tmp, self.progress = conn, store, files, tmp, progress
        self.total = sum(local.stat().st_size for local, _, _ in files)
        self.shown = 0
        self.resumed_at: list[int] = []  # bundle offsets where a resumed upload started

    def _show(self, position: int) -> None:
        if self.progress and position >= self.shown:
            self.shown = position
            self.progress(position, self.total)

    def run(self, resuming: bool = False) -> None:
        conn = self.conn
        _prepare_store(conn, self.store, 0 if resuming else self.total,
                       sorted({posixpath.dirname(posixpath.join(self.tmp, rel)) for _, rel, _ in self.files}))
        done = 0
        for local, rel, _ in self.files:
            size, remote = local.stat().st_size, posixpath.join(self.tmp, rel)
            there = conn.stat(remote) if resuming else None
            offset = there.st_size if there is not None and there.st_size <= size else 0
            if resuming and there is not None and offset == size:
                done += size  # complete already (the sha256 check below decides)
                continue
            if resuming and offset:
                self.resumed_at.append(done + offset)
            try:
                conn.put(local, remote, progress=lambda sent, _size, base=done: self._show(base + sent), offset=offset)
            except SftpWriteError as exc:
                if not conn.alive:
                    raise TransferError(f"{conn.target.label}: upload of {rel} broke off at {exc.sent} of "
                                        f"{exc.total} bytes ({exc})") from None
                free = _free_bytes(conn, self.store, timeout=conn.options.stall_timeout)
                if free < self.total - done - exc.sent:
                    raise _disk_full(conn, self.store, self.total - done, free + exc.sent) from None
                raise TransferError(f"{conn.target.label}: upload of {rel} failed ({exc}); push again") from None
            done += size
        listing = "".join(f"{sha}  {rel}\n" for _, rel, sha in self.files)
        check = conn.run(f"cd {shlex.quote(self.tmp)} && sha256sum -c --strict --quiet <<'EDGEC_EOF'\n"
                         f"{listing}EDGEC_EOF", timeout=max(60.0, self.total / 5e6), what="sha256sum")
        if check.exit_code != 0:
            detail = (check.stdout + check.stderr).strip().splitlines()
            raise TransferError(f"{conn.target.label}: uploaded files fail their sha256 check on the device "
                                f"({detail[0] if detail else 'exit ' + str(check.exit_code)}); push again")


def _link_broke(conn: Connection, exc: DeviceError) -> bool:
    """A failure a fresh connection may get past: the transport died (stall watchdog, reset, device gone) while
    nobody closed it on purpose. Deadlines, host keys, a full disk or a failed check are final."""
    return not (conn.closed or conn.alive or isinstance(exc, (DeviceTimeoutError, HostKeyError)))


def _resuming(conn: Connection, attempt) -> int:
    """Run ``attempt(resuming)``; when the link breaks, reconnect and run it again (up to ``transfer_retries``
    times), so it resumes. Returns how many times it resumed."""
    retries = conn.options.transfer_retries
    for tried in range(retries + 1):
        try:
            attempt(tried > 0)
            return tried
        except DeviceError as exc:
            if tried == retries or not _link_broke(conn, exc):
                raise
            log.warning("%s; reconnecting to resume (%d of %d)", exc, tried + 1, retries)
            try:
                conn.reconnect()
            except DeviceError as again:
                raise TransferError(f"{exc}; reconnecting to resume failed: {again}") from None
    raise AssertionError("unreachable")


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

    A link that breaks mid-push (stall, reset) is reconnected and the upload resumed where the device's copy
    ends, up to ``conn.options.transfer_retries`` times.

    Args:
        conn: an open connection.
        bundle: a Bundle or its directory; its files are checked locally first.
        progress: optional ``progress(sent, total)`` callable.

    Raises:
        BundleError: the local bundle is damaged.
        TransferError: the upload stalled or broke off (and could not be resumed), failed its check, or the disk
            is full.
    """
    start = time.monotonic()
    bundle = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
    label = conn.target.name or conn.target.label
    sent_before = conn.bytes_sent
    state: dict = {}

    def attempt(resuming: bool) -> None:
        if "final" not in state:
            bundle.check_files()  # only when it is not on the device already
            store = posixpath.join(remote_home(conn), ".edgec", "bundles")
            state.update(store=store, final=posixpath.join(store, bundle.bundle_id),
                         tmp=posixpath.join(store, f".partial-{bundle.bundle_id}"))
        if _exists(conn, posixpath.join(state["final"], MANIFEST_NAME)):
            state["there"] = not resuming  # else: renamed into place just before the link broke
            if state["there"]:
                conn.touch(state["final"])  # its mtime says when it was last used (edgec farm prune keeps those)
            return
        if "upload" not in state:
            state["upload"] = _Upload(conn, state["store"], _bundle_files(bundle), state["tmp"], progress)
            state["continued"] = _exists(conn, state["tmp"])  # an earlier push's partial upload
        state["upload"].run(resuming or state["continued"])
        _rename_into_place(conn, state["tmp"], state["final"])

    try:
        resumes = _resuming(conn, attempt)
    except KeyboardInterrupt:
        raise  # keep the partial upload: pushing again continues it
    except BaseException:
        if "tmp" in state:
            _remove(conn, state["tmp"])
        raise
    upload = state.get("upload")
    return PushReport(bundle.bundle_id, label, state["final"], state.get("there", False),
                      conn.bytes_sent - sent_before, time.monotonic() - start, resumes,
                      upload.resumed_at if upload else [], state.get("continued", False))


def _rename_into_place(conn: Connection, tmp: str, final: str) -> None:
    if not conn.rename(tmp, final):
        # Another push of the same content won the race: its copy is as good as ours.
        if not _exists(conn, posixpath.join(final, MANIFEST_NAME)) and not _exists(conn, final):
            raise TransferError(f"{conn.target.label}: cannot rename {tmp} to {final}; push again")
        _remove(conn, tmp)


def install_agent(conn: Connection, agent: Path) -> str:
    """Make the agent zipapp available as ``~/.edgec/agent/<its name>``; returns its path on the device.

    The name carries the hash of the content, so an existing file of that name is the same agent. Uploaded like a
    bundle: to a temporary name, sha256-checked, renamed, resumed over a fresh connection when the link breaks.
    """
    state: dict = {}

    def attempt(resuming: bool) -> None:
        if "final" not in state:
            agent_dir = posixpath.join(remote_home(conn), ".edgec", "agent")
            state.update(dir=agent_dir, final=posixpath.join(agent_dir, agent.name),
                         tmp=posixpath.join(agent_dir, f".tmp-{secrets.token_hex(4)}-{agent.name}"))
        if _exists(conn, state["final"]):
            return
        if "upload" not in state:
            files = [(agent, posixpath.basename(state["tmp"]), sha256_file(agent))]
            state["upload"] = _Upload(conn, state["dir"], files, state["dir"], None)
        state["upload"].run(resuming)
        _rename_into_place(conn, state["tmp"], state["final"])

    try:
        _resuming(conn, attempt)
    except BaseException:
        if "tmp" in state:
            _remove(conn, state["tmp"])
        raise
    return state["final"]
