"""Opening SSH connections: targets, options, ~/.ssh/config, host-key policy, ProxyJump chains and retries.

Private to ``edgec.deploy.ssh`` (which re-exports ``SshTarget``, ``SshOptions`` and ``host_key_name``); with it,
the only place edgec imports paramiko.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import logging
import os
import socket
import time
from pathlib import Path

import paramiko

from edgec.deploy.ssh_options import SshOptions, SshTarget
from edgec.errors import DeviceError, HostKeyError

__all__ = ["SshOptions", "SshTarget", "connect_client", "host_key_name"]

log = logging.getLogger("edgec.deploy.ssh")


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
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def _is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: the device may be booting or the link flaky. Never auth or host-key errors."""
    if isinstance(exc, (paramiko.AuthenticationException, paramiko.BadHostKeyException, HostKeyError)):
        return False
    return isinstance(exc, (OSError, EOFError, paramiko.SSHException, socket.timeout))


def connect_client(target: SshTarget, options: SshOptions) -> _Client:
    """Connect (through the ProxyJump hosts, if any), retrying transient failures with exponential backoff."""
    params = _resolve(target, options)
    hops = [(_jump_target(spec, target), None) for spec in params["proxy_jump"]] + [(target, params)]
    delay, last = options.backoff, None
    for attempt in range(options.retries + 1):
        try:
            return _open_chain(hops, options)
        except DeviceError:  # host key, authentication, config: final (HostKeyError is one too)
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
