"""SSH to a device: the only module of edgec that imports paramiko.

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
import getpass
import logging
import os
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from edgec.errors import DeviceError, DeviceTimeoutError, HostKeyError, TransferError

__all__ = ["NETWORK_ERRORS", "CommandResult", "Connection", "RemoteProcess", "SftpWriteError", "SshOptions", "SshTarget", "connect", "host_key_name"]

log = logging.getLogger(__name__)
logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # its tracebacks duplicate our one-line errors


# What a network step can raise from paramiko or the socket: callers outside this module catch this tuple.
NETWORK_ERRORS = (OSError, EOFError, paramiko.SSHException)


@dataclass(frozen=True)
class SshTarget:
    """Where to connect: what the user or the inventory said; blanks are filled from ~/.ssh/config."""

    host: str
    port: int | None = None
    user: str | None = None
    key: str | None = None
    name: str | None = None  # the inventory name, used in messages

    @property
    def label(self) -> str:
        address = f"{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"
        return f"{self.name} ({address})" if self.name and self.name != self.host else address


@dataclass(frozen=True)
class SshOptions:
    """Timeouts (seconds), retry policy and trust settings for every connection."""

    connect_timeout: float = 10.0
    command_timeout: float = 600.0
    stall_timeout: float = 20.0
    retries: int = 3
    backoff: float = 0.5
    known_hosts: str = "~/.ssh/known_hosts"
    ssh_config: str = "~/.ssh/config"
    system_known_hosts: str | None = "/etc/ssh/ssh_known_hosts"
    trust_new_host: bool = False
    keepalive: int = 5
    # How often a push whose link broke (stall, reset) reconnects and resumes the upload where the device's copy
    # ends. Under heavy loss TCP's retransmission backoff alone can exceed any sane stall window, and a fresh
    # connection starts with a fresh retransmission timer.
    transfer_retries: int = 3

    def __post_init__(self):
        for name in ("connect_timeout", "command_timeout", "stall_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SshOptions.{name} must be > 0")
        if self.transfer_retries < 0 or self.retries < 0:
            raise ValueError("SshOptions.retries and transfer_retries must be >= 0")


@dataclass
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str = ""


def host_key_name(host: str, port: int) -> str:
    """How known_hosts names a host: ``[host]:port`` unless the port is 22."""
    return host if port == 22 else f"[{host}]:{port}"


def _resolve(target: SshTarget, options: SshOptions) -> dict:
    """Fill the target's blanks from ~/.ssh/config like OpenSSH does: explicit values win."""
    config = paramiko.SSHConfig()
    config_path = Path(os.path.expanduser(options.ssh_config))
    if config_path.is_file():
        try:
            config = paramiko.SSHConfig.from_path(str(config_path))
        except Exception as exc:  # paramiko raises several kinds for a malformed file
            raise DeviceError(f"{config_path}: cannot parse SSH config ({exc}); fix the file") from None
    found = config.lookup(target.host)
    if target.key:
        keys = [os.path.expanduser(target.key)]
        if not os.path.isfile(keys[0]):
            raise DeviceError(f"{target.label}: private key {keys[0]} not found; fix `key` or --device")
    else:
        keys = [k for k in (os.path.expanduser(k) for k in found.get("identityfile", [])) if os.path.isfile(k)]
    command = None if found.get("proxycommand", "none").lower() == "none" else found["proxycommand"]
    jump = found.get("proxyjump", "none")
    jumps = [] if jump.lower() == "none" else [j for j in jump.split(",") if j.strip()]
    if command and jumps:
        raise DeviceError(f"{config_path}: host {target.host!r} sets both ProxyCommand and ProxyJump; keep one")
    # Host-key settings of the config apply unless the caller chose its own known_hosts file. OpenSSH's "no"
    # would also accept a changed key; edgec never does, so "no" and "accept-new" both mean --trust-new-host.
    known_hosts = [options.known_hosts]
    if options.known_hosts == SshOptions.known_hosts and found.get("userknownhostsfile"):
        known_hosts = found["userknownhostsfile"].split()
    strict = found.get("stricthostkeychecking", "ask").lower()
    return {
        "known_hosts": [Path(os.path.expanduser(k)) for k in known_hosts],
        "trust_new_host": options.trust_new_host or strict in ("accept-new", "no", "off", "false"),
        "hostname": found.get("hostname", target.host),
        "port": int(target.port or found.get("port", 22)),
        "username": target.user or found.get("user") or getpass.getuser(),
        "key_filename": keys or None,
        # A farm behind a jump host: ProxyCommand (e.g. `ssh -W %h:%p bastion`, tokens already expanded) or
        # ProxyJump (`[user@]host[:port]`, comma-separated for a chain; each host looked up in the config too).
        "proxy_command": command,
        "proxy_jump": jumps,
    }


class _TrustOnFirstUse(paramiko.MissingHostKeyPolicy):
    """Record an unknown key in known_hosts (only with --trust-new-host, explicitly)."""

    def __init__(self, known_hosts: Path):
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with open(self.known_hosts, "a") as handle:
            handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        log.warning("recorded host key %s %s for %s in %s", key.get_name(), _fingerprint(key), hostname,
                    self.known_hosts)


class _Refuse(paramiko.MissingHostKeyPolicy):
    def __init__(self, known_hosts: Path, label: str):
        self.known_hosts, self.label = known_hosts, label

    def missing_host_key(self, client, hostname, key):
        raise HostKeyError(
            f"{self.label}: unknown host key ({key.get_name()} {_fingerprint(key)}), not in {self.known_hosts}; "
            f"if that fingerprint is the device's, rerun with --trust-new-host to record it"
        )


def _fingerprint(key) -> str:
    import base64
    import hashlib

    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def _is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: the device may be booting or the link flaky. Never auth or host-key errors."""
    if isinstance(exc, (paramiko.AuthenticationException, paramiko.BadHostKeyException, HostKeyError)):
        return False
    return isinstance(exc, (OSError, EOFError, paramiko.SSHException, socket.timeout))


def connect(target: SshTarget, options: SshOptions | None = None) -> Connection:
    """Open an authenticated connection, retrying setup with exponential backoff.

    Raises:
        HostKeyError: the host key is unknown (without ``trust_new_host``) or changed.
        DeviceError: unreachable after all retries, or authentication refused.
    """
    options = options or SshOptions()
    return Connection(target, options, _connect_client(target, options))


def _connect_client(target: SshTarget, options: SshOptions) -> _Client:
    """Connect (through the ProxyJump hosts, if any), retrying transient failures with exponential backoff."""
    params = _resolve(target, options)
    hops = [(_jump_target(spec, target), None) for spec in params["proxy_jump"]] + [(target, params)]
    delay, last = options.backoff, None
    for attempt in range(options.retries + 1):
        try:
            return _open_chain(hops, options)
        except (HostKeyError, DeviceError):
            raise
        except BaseException as exc:
            if not _is_transient(exc):
                raise
            last = exc
            if attempt < options.retries:
                log.info("%s: connect failed (%s), retrying in %.1fs", target.label, exc, delay)
                time.sleep(delay)
                delay *= 2
    via = f" via {', '.join(t.host for t, _ in hops[:-1])}" if len(hops) > 1 else ""
    raise DeviceError(
        f"{target.label}: cannot connect{via} after {options.retries + 1} attempts "
        f"({type(last).__name__}: {last or 'no detail'}); check that the device is on and sshd is running"
    )


def _jump_target(spec: str, target: SshTarget) -> SshTarget:
    """``[user@]host[:port]`` of a ProxyJump entry (ssh:// URIs are not supported)."""
    user, _, hostport = spec.strip().rpartition("@")
    host, port = hostport, None
    if hostport.count(":") == 1:
        host, _, number = hostport.partition(":")
        if not number.isdigit():
            raise DeviceError(f"{target.label}: ProxyJump entry {spec!r} has a bad port; use [user@]host[:port]")
        port = int(number)
    if not host or spec.startswith("ssh://"):
        raise DeviceError(f"{target.label}: cannot read ProxyJump entry {spec!r}; use [user@]host[:port]")
    return SshTarget(host=host, port=port, user=user or None, name=f"jump host {host}")


def _open_chain(hops: list[tuple[SshTarget, dict | None]], options: SshOptions) -> _Client:
    """Open each hop through the previous one's ``direct-tcpip`` channel; the last client owns the others."""
    opened: list[_Client] = []
    try:
        for hop, params in hops:
            if params is None:  # a jump host: its HostName, Port, User, IdentityFile come from the config too
                params = {**_resolve(hop, options), "proxy_command": None, "proxy_jump": []}
            sock = None
            if opened:
                sock = opened[-1].get_transport().open_channel(
                    "direct-tcpip", (params["hostname"], params["port"]), ("127.0.0.1", 0),
                    timeout=options.connect_timeout)
            elif params["proxy_command"]:
                sock = paramiko.ProxyCommand(params["proxy_command"])
            opened.append(_open_hop(hop, options, params, sock))
    except BaseException:
        for client in reversed(opened):
            client.close()
        raise
    opened[-1].jumps = opened[:-1]
    return opened[-1]


def _open_hop(target: SshTarget, options: SshOptions, params: dict, sock) -> _Client:
    """One authenticated connection; host-key and authentication failures become edgec's one-line errors."""
    try:
        return _open_client(target, options, params, sock)
    except paramiko.BadHostKeyException as exc:
        name, known_hosts = host_key_name(params["hostname"], params["port"]), params["known_hosts"][0]
        raise HostKeyError(
            f"{target.label}: host key CHANGED (now {exc.key.get_name()} {_fingerprint(exc.key)}, "
            f"{known_hosts} has {_fingerprint(exc.expected_key)}); if the device was reinstalled, "
            f"remove the old key with `ssh-keygen -R '{name}' -f {known_hosts}` and rerun with "
            "--trust-new-host; otherwise someone may be intercepting the connection"
        ) from None
    except paramiko.AuthenticationException as exc:
        raise DeviceError(
            f"{target.label}: authentication as {params['username']!r} refused ({exc}); set `key` in the "
            "inventory, add the key to ssh-agent, or check the user"
        ) from None


class _Client(paramiko.SSHClient):
    """An SSH client that also closes the jump-host connections it was opened through."""

    def __init__(self):
        super().__init__()
        self.jumps: list[_Client] = []

    def close(self):
        super().close()
        for jump in reversed(self.jumps):
            jump.close()


def _open_client(target: SshTarget, options: SshOptions, params: dict, sock=None) -> _Client:
    client = _Client()
    known_hosts, *others = params["known_hosts"]
    if known_hosts.is_file():
        client.load_host_keys(str(known_hosts))  # where a trusted new key is recorded
    for path in [*others, options.system_known_hosts]:
        if path and os.path.isfile(path):
            client.load_system_host_keys(str(path))  # read, never written
    policy = _TrustOnFirstUse(known_hosts) if params["trust_new_host"] else _Refuse(known_hosts, target.label)
    client.set_missing_host_key_policy(policy)
    timeout = options.connect_timeout
    try:
        client.connect(
            params["hostname"], port=params["port"], username=params["username"],
            key_filename=params["key_filename"], timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
            channel_timeout=timeout, allow_agent=True, look_for_keys=params["key_filename"] is None, sock=sock,
        )
    except BaseException:
        client.close()
        if sock is not None:
            sock.close()
        raise
    client.get_transport().set_keepalive(options.keepalive)
    return client


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
        client = _connect_client(self.target, self.options)
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
        """The user's home as the device's SFTP server sees it (where relative SFTP paths start)."""
        with self.guarded("sftp realpath", self.options.stall_timeout, stall=True):
            return self.sftp().normalize(".")

    def stat(self, path: str) -> paramiko.SFTPAttributes | None:
        """``path``'s attributes on the device, or None when it does not exist."""
        with self.guarded("sftp stat", self.options.stall_timeout, stall=True):
            try:
                return self.sftp().stat(path)
            except FileNotFoundError:
                return None

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

    def start(self, command: str, what: str | None = None) -> RemoteProcess:
        """Start a long-lived command whose stdin/stdout carry lines (the agent's ``serve``)."""
        what = what or command.split()[0]
        with self.guarded(what, self.options.connect_timeout + 1):
            channel = self._transport(what).open_session(timeout=self.options.connect_timeout)
            channel.exec_command(command)
        return RemoteProcess(self, channel, what)

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
        return total


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


def _drain(channel, out: bytearray, err: bytearray, until_line: bool = False) -> int | None:
    """Read stdout and stderr as they come (either may fill its window) until EOF; the exit code (-1 when the
    connection died). With ``until_line``, return None as soon as ``out`` holds a whole line."""
    while True:
        if until_line and b"\n" in out:
            return None
        if channel.recv_ready():
            out.extend(channel.recv(65536))
        elif channel.recv_stderr_ready():
            err.extend(channel.recv_stderr(65536))
        elif channel.eof_received or channel.closed:
            return channel.recv_exit_status()  # the caller's watchdog bounds this wait
        else:
            select.select([channel], [], [], 0.5)


class RemoteProcess:
    """A command running on the device, talked to in lines; every read has a deadline."""

    def __init__(self, conn: Connection, channel, what: str):
        self.conn, self.channel, self.what = conn, channel, what
        self.out, self.err = bytearray(), bytearray()
        self.exit_code: int | None = None

    def send_line(self, text: str) -> None:
        with self.conn.guarded(self.what, self.conn.options.stall_timeout):
            self.channel.sendall(text.encode() + b"\n")

    def read_line(self, timeout: float) -> str | None:
        """The next stdout line, or None when the command ended first (then ``exit_code`` is set)."""
        with self.conn.guarded(self.what, timeout):
            code = _drain(self.channel, self.out, self.err, until_line=True)
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
        self.channel.close()


class SftpWriteError(Exception):
    """An SFTP write failed for a reason the caller must diagnose (disk full reports only ``Failure``)."""

    def __init__(self, cause: BaseException, sent: int, total: int):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause, self.sent, self.total = cause, sent, total
