"""SSH to a device: this module and ``_ssh_connect`` (opening connections) are the only ones importing paramiko.

Every network step has a timeout. Connection setup is retried with exponential backoff (a device that is
booting or a flaky Wi-Fi link); nothing after it is ever retried here (``edgec.deploy.push`` resumes an upload on
a fresh connection with ``Connection.reconnect``, since an upload is idempotent; a benchmark is never retried). Two watchdogs guard what paramiko cannot
time out by itself: a *stall* watchdog closes the transport when a transfer makes no progress for
``stall_timeout`` seconds (a dropped link makes ``sftp.put`` hang forever otherwise, even with channel timeouts
and keepalives), and every remote command has a deadline after which the transport is closed as well.

Host keys are checked against ``known_hosts`` (jump hosts' too); an unknown or changed key is refused with a
message saying how to trust it. ``~/.ssh/config`` (HostName, Port, User, IdentityFile, ProxyCommand, ProxyJump,
UserKnownHostsFile, and StrictHostKeyChecking ``accept-new``/``no`` as ``--trust-new-host``: a changed key is
always refused), private keys and ssh-agent are honoured; ``/etc/ssh/ssh_known_hosts`` is read too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from edgec.deploy._ssh_connect import SshOptions, SshTarget, connect_client, host_key_name
from edgec.errors import DeviceError, DeviceTimeoutError, TransferError

__all__ = ["NETWORK_ERRORS", "CommandResult", "Connection", "RemoteProcess", "SftpWriteError", "SshOptions",
           "SshTarget", "connect", "host_key_name"]

log = logging.getLogger(__name__)
logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # its tracebacks duplicate our one-line errors


# What a network step can raise from paramiko or the socket: callers outside this module catch this tuple.
NETWORK_ERRORS = (OSError, EOFError, paramiko.SSHException)


@dataclass
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str = ""


def connect(target: SshTarget, options: SshOptions | None = None) -> Connection:
    """Open an authenticated connection, retrying setup with exponential backoff.

    Raises:
        HostKeyError: the host key is unknown (without ``trust_new_host``) or changed.
        DeviceError: unreachable after all retries, or authentication refused.
    """
    options = options or SshOptions()
    return Connection(target, options, connect_client(target, options))


class _Watchdog:
    """Closes a transport when ``tick()`` was not called for ``stall`` seconds or ``deadline`` passed.

    Closing the transport is the only thing that frees a thread blocked in paramiko on a dead link.
    """

    def __init__(self, transport, stall: float | None, deadline: float | None = None):
        self.transport, self.stall, self.deadline = transport, stall, deadline
        self.fired: str | None = None
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="edgec-ssh-watchdog")

    def tick(self, *_):
        self._last = time.monotonic()

    def _watch(self):
        while not self._stop.wait(0.1):
            now = time.monotonic()
            if self.stall is not None and now - self._last > self.stall:
                self.fired = "stall"
            elif self.deadline is not None and now > self.deadline:
                self.fired = "deadline"
            if self.fired:
                self.transport.close()
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@dataclass
class Connection:
    """An open SSH connection to one device; use as a context manager."""

    target: SshTarget
    options: SshOptions
    client: paramiko.SSHClient
    bytes_sent: int = 0
    closed: bool = False  # closed on purpose (by the caller, a farm deadline or Ctrl-C): never reconnected
    _sftp: paramiko.SFTPClient | None = field(default=None, repr=False)
    _home: str | None = field(default=None, repr=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Close the connection; safe from another thread (frees a blocked transfer or command)."""
        self.closed = True
        self.client.close()

    def reconnect(self) -> None:
        """Replace a broken connection by a new one (connection setup retried as in ``connect``).

        Raises:
            DeviceError: the connection was closed on purpose, or the device cannot be reached again.
        """
        if self.closed:
            raise DeviceError(f"{self.target.label}: connection was closed; not reconnecting")
        self.client.close()
        self._sftp = None
        client = connect_client(self.target, self.options)
        if self.closed:  # closed from another thread while we reconnected
            client.close()
            raise DeviceError(f"{self.target.label}: connection was closed; not reconnecting")
        self.client = client

    @property
    def alive(self) -> bool:
        transport = self.client.get_transport()
        return bool(transport and transport.is_active())

    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = self.client.open_sftp()
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise DeviceError(f"{self.target.label}: cannot open SFTP ({exc}); is the sftp subsystem on?") from None
            # Longer than the stall watchdog, so a stalled upload is always reported as a stall.
            self._sftp.get_channel().settimeout(2 * self.options.stall_timeout + 5)
        return self._sftp

    def _transport(self, what: str):
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise DeviceError(f"{self.target.label}: connection closed before `{what}`")
        return transport

    @contextlib.contextmanager
    def guarded(self, what: str, timeout: float, stall: bool = False):
        """Run a block against a deadline: at ``timeout`` the transport is closed and DeviceTimeoutError raised
        (TransferError "stalled" with ``stall``: a reply that should take a round trip); a connection that breaks
        off raises DeviceError."""
        with _Watchdog(self._transport(what), None, time.monotonic() + timeout) as dog:
            try:
                yield
            except (OSError, EOFError, paramiko.SSHException) as exc:
                if not dog.fired:
                    raise DeviceError(f"{self.target.label}: connection lost during `{what}` "
                                      f"({exc or type(exc).__name__})") from None
        if dog.fired and stall:
            raise TransferError(f"{self.target.label}: `{what}` stalled (no reply for {timeout:g} s); link down or "
                                "device hung; closed")
        if dog.fired:
            raise DeviceTimeoutError(f"{self.target.label}: `{what}` did not finish within {timeout:g} s; stopped")

    def home(self) -> str:
        """The user's home as the device's SFTP server sees it (where relative SFTP paths start); asked once per
        connection (installing the agent, pushing and pruning all need it)."""
        if self._home is None:
            with self.guarded("sftp realpath", self.options.stall_timeout, stall=True):
                self._home = self.sftp().normalize(".")
        return self._home

    def stat(self, path: str) -> paramiko.SFTPAttributes | None:
        """``path``'s attributes on the device, or None when it does not exist."""
        with self.guarded("sftp stat", self.options.stall_timeout, stall=True):
            try:
                return self.sftp().stat(path)
            except FileNotFoundError:
                return None

    def touch(self, path: str) -> None:
        """Set ``path``'s modification time on the device to now."""
        with self.guarded("sftp utime", self.options.stall_timeout, stall=True):
            self.sftp().utime(path, None)

    def rename(self, old: str, new: str) -> bool:
        """Atomic rename on the device (the posix-rename extension); False when the server refused it (e.g. the
        target exists); DeviceError when the link failed."""
        with self.guarded("sftp rename", self.options.stall_timeout, stall=True):
            try:
                self.sftp().posix_rename(old, new)
            except OSError as exc:
                if not self.alive or isinstance(exc, socket.timeout):
                    raise
                return False
        return True

    def run(self, command: str, timeout: float | None = None, what: str | None = None) -> CommandResult:
        """Run ``command`` on the device and collect its output; the transport is closed at the deadline.

        Raises:
            DeviceTimeoutError: it did not finish within ``timeout`` (default ``command_timeout``).
            DeviceError: the connection broke off while it ran (never retried: it may be half done).
        """
        timeout = timeout or self.options.command_timeout
        what = what or command.split()[0]
        out, err, code = bytearray(), bytearray(), -1
        with self.guarded(what, timeout):
            channel = self._transport(what).open_session(timeout=self.options.connect_timeout)
            channel.exec_command(command)
            channel.shutdown_write()
            code = _drain(channel, out, err)
        if code == -1:
            raise DeviceError(f"{self.target.label}: connection lost during `{what}` (no exit status); not retried")
        return CommandResult(code, out.decode(errors="replace"), err.decode(errors="replace"))

    def start(self, command: str, what: str | None = None, heartbeat: float | None = None) -> RemoteProcess:
        """Start a long-lived command whose stdin/stdout carry lines (the agent's ``serve``); with ``heartbeat``,
        a blank line goes to it every ``heartbeat`` seconds while a reply is awaited."""
        what = what or command.split()[0]
        with self.guarded(what, self.options.connect_timeout + 1):
            channel = self._transport(what).open_session(timeout=self.options.connect_timeout)
            channel.exec_command(command)
        return RemoteProcess(self, channel, what, heartbeat)

    def put(self, local: str | os.PathLike, remote: str, progress=None, offset: int = 0) -> int:
        """Upload one file with the stall watchdog; returns the bytes sent.

        With ``offset``, the device already holds the file's first ``offset`` bytes and only the rest is sent
        (a resumed upload). ``progress(position, total)`` is called as bytes go out. A stall longer than
        ``stall_timeout`` closes the connection and raises TransferError; a failed write raises SftpWriteError.
        """
        total = os.path.getsize(local)
        sent = [offset]
        sftp = self.sftp()

        def on_progress(done):
            self.bytes_sent += done - sent[0]
            sent[0] = done
            dog.tick()
            if progress:
                progress(done, total)

        with _Watchdog(self._transport("upload"), self.options.stall_timeout) as dog:
            try:
                _write_file(sftp, local, remote, offset, total, on_progress)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                if dog.fired:
                    raise TransferError(
                        f"{self.target.label}: upload of {Path(local).name} stalled ({sent[0]} of {total} bytes, "
                        f"no progress for {self.options.stall_timeout:g} s); link down or device hung; closed"
                    ) from None
                raise SftpWriteError(exc, sent[0], total) from None
        return total - offset


def _write_file(sftp, local, remote: str, offset: int, total: int, on_progress, chunk: int = 32768) -> None:
    """Write ``local[offset:]`` at the same offset of ``remote`` (created or truncated when ``offset`` is 0), with
    pipelined SFTP writes, then check the device's size (as ``SFTPClient.put(confirm=True)`` does)."""
    with open(local, "rb") as source, sftp.open(remote, "r+b" if offset else "wb") as target:
        target.set_pipelined(True)
        source.seek(offset)
        target.seek(offset)
        position = offset
        while data := source.read(chunk):
            target.write(data)
            position += len(data)
            on_progress(position)
    size = sftp.stat(remote).st_size
    if size != total:
        raise OSError(f"size mismatch: {remote} holds {size} bytes, {total} were sent")


MAX_OUTPUT_BYTES = 64 << 20  # a BenchResult with 5000 latency samples is ~0.1 MiB
MAX_STDERR_BYTES = 1 << 20


def _drain(channel, out: bytearray, err: bytearray, until_line: bool = False,
           heartbeat: float | None = None) -> int | None:
    """Read stdout and stderr as they come (either may fill its window) until EOF; the exit code (-1 when the
    connection died). With ``until_line``, return None as soon as ``out`` holds a whole line. With
    ``heartbeat``, send the command a blank line every ``heartbeat`` seconds while waiting."""
    sent = time.monotonic()
    while True:
        if until_line and b"\n" in out:
            return None
        if heartbeat and time.monotonic() - sent >= heartbeat:
            sent = time.monotonic()
            if not (channel.closed or channel.eof_received or channel.exit_status_ready()):
                with contextlib.suppress(OSError):  # it may be exiting: its EOF and exit code tell the rest
                    channel.sendall(b"\n")
        if channel.recv_ready():
            out.extend(channel.recv(65536))
            if len(out) > MAX_OUTPUT_BYTES:  # what a device sends is bounded like any other input
                raise DeviceError(f"the device sent more than {MAX_OUTPUT_BYTES >> 20} MiB on stdout; stopped")
        elif channel.recv_stderr_ready():
            err.extend(channel.recv_stderr(65536))
            del err[:-MAX_STDERR_BYTES]  # only its tail is ever shown
        elif channel.eof_received or channel.closed:
            return channel.recv_exit_status()  # the caller's watchdog bounds this wait
        else:
            select.select([channel], [], [], 0.5)


class RemoteProcess:
    """A command running on the device, talked to in lines; every read has a deadline."""

    def __init__(self, conn: Connection, channel, what: str, heartbeat: float | None = None):
        self.conn, self.channel, self.what = conn, channel, what
        self.heartbeat = heartbeat  # seconds between blank lines sent while waiting (the agent's --heartbeat)
        self.out, self.err = bytearray(), bytearray()
        self.exit_code: int | None = None

    def send_line(self, text: str) -> None:
        with self.conn.guarded(self.what, self.conn.options.stall_timeout):
            self.channel.sendall(text.encode() + b"\n")

    def read_line(self, timeout: float) -> str | None:
        """The next stdout line, or None when the command ended first (then ``exit_code`` is set)."""
        with self.conn.guarded(self.what, timeout):
            code = _drain(self.channel, self.out, self.err, until_line=True, heartbeat=self.heartbeat)
        if code is not None:
            self.exit_code = code
            if code == -1:
                raise DeviceError(f"{self.conn.target.label}: connection lost during `{self.what}`; not retried")
            return None
        line, _, rest = bytes(self.out).partition(b"\n")
        self.out[:] = rest
        return line.decode(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.decode(errors="replace")

    def close(self) -> None:
        """Close the channel; a link that broke meanwhile is not an error here (closing is clean-up: it must not
        turn a finished command's result into an EOFError)."""
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self.channel.close()


class SftpWriteError(Exception):
    """An SFTP write failed for a reason the caller must diagnose (disk full reports only ``Failure``)."""

    def __init__(self, cause: BaseException, sent: int, total: int):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause, self.sent, self.total = cause, sent, total
