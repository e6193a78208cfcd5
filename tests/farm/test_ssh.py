"""edgec.deploy.ssh against real sshd servers: host keys, ssh config, agent, retries, timeouts."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from farm_testbed import free_port, make_key, trust

from edgec.deploy.ssh import SshOptions, SshTarget, connect
from edgec.errors import DeviceError, DeviceTimeoutError, HostKeyError


def test_run_returns_output_exit_code_and_device_home(sshd, client_key, ssh_opts):
    server = sshd()
    trust(server, ssh_opts)
    with connect(server.device(client_key, "d1").ssh_target(), ssh_opts) as conn:
        result = conn.run("echo out; echo err >&2; echo $HOME; exit 3")
        assert result.exit_code == 3
        assert result.stdout.splitlines() == ["out", str(server.home)]
        assert result.stderr == "err\n"
        assert conn.sftp().normalize(".") == str(server.home)


def test_unknown_host_is_refused_with_how_to_trust_it(sshd, client_key, ssh_opts):
    server = sshd()
    with pytest.raises(HostKeyError, match=r"unknown host key .*SHA256:.*--trust-new-host"):
        connect(server.device(client_key, "d1").ssh_target(), ssh_opts)
    assert not Path(ssh_opts.known_hosts).exists()


def test_trust_new_host_records_the_key_then_plain_connect_works(sshd, client_key, ssh_opts):
    server = sshd()
    target = server.device(client_key, "d1").ssh_target()
    with connect(target, replace(ssh_opts, trust_new_host=True)):
        pass
    line = Path(ssh_opts.known_hosts).read_text()
    assert line.split()[:3] == server.host_key_line().split()[:3]
    with connect(target, ssh_opts) as conn:  # now known, without the flag
        assert conn.run("true").exit_code == 0


def test_changed_host_key_is_refused_even_with_trust_new_host(sshd, client_key, ssh_opts):
    server = sshd()
    trust(server, ssh_opts)
    server.stop()
    (server.root / "host_ed25519").unlink()
    (server.root / "host_ed25519.pub").unlink()
    server.start()  # same address and port, new key: a reinstalled device (or an impostor)
    for opts in (ssh_opts, replace(ssh_opts, trust_new_host=True)):
        with pytest.raises(HostKeyError, match=r"CHANGED.*ssh-keygen -R '\[127.0.0.1\]:\d+'"):
            connect(server.device(client_key, "d1").ssh_target(), opts)


def test_ssh_config_user_known_hosts_file_and_accept_new(sshd, client_key, ssh_opts, tmp_path, monkeypatch):
    """A farm's own known_hosts and `StrictHostKeyChecking accept-new` in ~/.ssh/config: unknown keys are recorded
    there (not in ~/.ssh/known_hosts); a changed key is still refused, naming that file."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    opts = SshOptions(ssh_config=ssh_opts.ssh_config, connect_timeout=5, retries=0)  # default known_hosts
    server = sshd()
    farm_known = tmp_path / "farm_known_hosts"
    config = (f"Host pi\n  HostName 127.0.0.1\n  Port {server.port}\n  User root\n  IdentityFile {client_key}\n"
              f"  UserKnownHostsFile {farm_known}\n")
    Path(opts.ssh_config).write_text(config)
    with pytest.raises(HostKeyError, match=rf"unknown host key .*not in {farm_known}"):
        connect(SshTarget(host="pi"), opts)
    Path(opts.ssh_config).write_text(config + "  StrictHostKeyChecking accept-new\n")
    with connect(SshTarget(host="pi"), opts) as conn:
        assert conn.run("true").exit_code == 0
    assert farm_known.read_text().split()[:3] == server.host_key_line().split()[:3]
    assert not (tmp_path / "home" / ".ssh" / "known_hosts").exists()
    server.stop()
    (server.root / "host_ed25519").unlink()
    (server.root / "host_ed25519.pub").unlink()
    server.start()  # a new key at the same address
    with pytest.raises(HostKeyError, match=rf"CHANGED.*-f {farm_known}"):
        connect(SshTarget(host="pi"), opts)


def test_ssh_config_alias_supplies_hostname_port_user_and_key(sshd, client_key, ssh_opts):
    server = sshd()
    trust(server, ssh_opts)
    Path(ssh_opts.ssh_config).write_text(
        f"Host pi-bench\n  HostName 127.0.0.1\n  Port {server.port}\n  User root\n  IdentityFile {client_key}\n")
    with connect(SshTarget(host="pi-bench"), ssh_opts) as conn:
        assert conn.run("id -u").stdout.strip() == "0"


def test_ssh_agent_key_is_used_when_no_key_is_given(sshd, client_key, ssh_opts, tmp_path, monkeypatch):
    server = sshd()
    trust(server, ssh_opts)
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", str(client_key)], env=env, check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_* to fall back on
        with connect(SshTarget(host="127.0.0.1", port=server.port, user="root"), ssh_opts) as conn:
            assert conn.run("true").exit_code == 0
    finally:
        agent.kill()
        agent.wait()


def test_wrong_key_is_refused_without_retrying(sshd, ssh_opts, tmp_path):
    server = sshd()
    trust(server, ssh_opts)
    other = make_key(tmp_path / "other_key")
    start = time.monotonic()
    with pytest.raises(DeviceError, match="authentication as 'root' refused"):
        connect(SshTarget(host="127.0.0.1", port=server.port, user="root", key=str(other)),
                replace(ssh_opts, retries=3, backoff=60))
    assert time.monotonic() - start < 30  # liveness, not speed: one retry would have slept 60 s first


def test_connection_setup_is_retried_with_backoff(sshd, client_key, ssh_opts):
    port = free_port()
    server_box = {}

    def start_late():
        # The device is still booting when we first try: the port accepts the first attempt and drops it (no
        # banner), and only then does sshd start. Ordered by that attempt, not by a sleep.
        with socket.create_server(("127.0.0.1", port)) as booting:
            booting.settimeout(60)
            first, _ = booting.accept()
            first.close()
        server_box["s"] = sshd("late", port=port)

    thread = threading.Thread(target=start_late)
    thread.start()
    try:
        opts = replace(ssh_opts, retries=6, backoff=0.5, trust_new_host=True)  # up to ~30 s for sshd to start
        with connect(SshTarget(host="127.0.0.1", port=port, user="root", key=str(client_key)), opts) as conn:
            assert conn.run("true").exit_code == 0
    finally:
        thread.join()
    assert "s" in server_box  # the first attempt really failed and was retried


def test_unreachable_device_fails_after_the_configured_attempts(client_key, ssh_opts):
    port = free_port()  # nothing listens there
    with pytest.raises(DeviceError, match=r"cannot connect after 3 attempts"):
        connect(SshTarget(host="127.0.0.1", port=port, user="root", key=str(client_key), name="ghost"),
                replace(ssh_opts, retries=2, backoff=0.05))


def test_a_device_that_accepts_but_never_speaks_ssh_fails_within_the_timeouts(client_key, ssh_opts):

    with socket.socket() as hole:  # accepts TCP (the kernel does), never sends a banner
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)
        start = time.monotonic()
        with pytest.raises(DeviceError, match="cannot connect after 2 attempts"):
            connect(SshTarget(host="127.0.0.1", port=hole.getsockname()[1], user="root", key=str(client_key)),
                    replace(ssh_opts, connect_timeout=1, retries=1, backoff=0.1))
        assert time.monotonic() - start < 30  # returns (2 attempts of 1 s), does not wait for a banner forever


def test_command_deadline_closes_the_connection(sshd, client_key, ssh_opts):
    server = sshd()
    trust(server, ssh_opts)
    with connect(server.device(client_key, "d1").ssh_target(), ssh_opts) as conn:
        start = time.monotonic()
        with pytest.raises(DeviceTimeoutError, match="`sleep` did not finish within 1 s"):
            conn.run("sleep 30", timeout=1)
        assert time.monotonic() - start < 20  # the deadline cut it: `sleep 30` would still run
        assert not conn.alive


def test_device_killed_during_a_command_is_reported_not_hung(sshd, client_key, ssh_opts):
    server = sshd()
    trust(server, ssh_opts)
    with connect(server.device(client_key, "d1").ssh_target(), ssh_opts) as conn:
        threading.Timer(0.5, server.kill).start()
        with pytest.raises(DeviceError, match="connection lost during `sleep`"):
            conn.run("sleep 30", timeout=20)


def test_ssh_config_proxy_command_through_a_jump_host(sshd, client_key, ssh_opts, tmp_path):
    device, bastion = sshd("device"), sshd("bastion")
    trust(device, ssh_opts)
    jump_known = tmp_path / "jump_known_hosts"
    jump_known.write_text(bastion.host_key_line())
    # The OpenSSH client carries the connection through the bastion (-W), as a farm behind a jump host would.
    Path(ssh_opts.ssh_config).write_text(
        f"Host behind-bastion\n  HostName 127.0.0.1\n  Port {device.port}\n  User root\n  IdentityFile {client_key}\n"
        f"  ProxyCommand ssh -q -i {client_key} -o UserKnownHostsFile={jump_known} -o BatchMode=yes "
        f"-p {bastion.port} -W %h:%p root@127.0.0.1\n")
    with connect(SshTarget(host="behind-bastion"), ssh_opts) as conn:
        assert conn.run("echo $HOME").stdout.strip() == str(device.home)
    bastion.stop()  # without the bastion there is no way through
    with pytest.raises(DeviceError, match="cannot connect after 2 attempts"):
        connect(SshTarget(host="behind-bastion"), replace(ssh_opts, connect_timeout=1))


def only_reachable_from(netns_farm, server, allowed) -> None:
    """Drop SSH to ``server`` from everywhere but ``allowed`` (this host included: it must go through a jump)."""
    rules = (f"table inet edgecjump {{\n chain i {{ type filter hook input priority 0; "
             f"tcp dport 22 ip saddr != {allowed.address} drop; }}\n}}\n")
    subprocess.run(["ip", "netns", "exec", server.netns, "nft", "-f", "-"], input=rules, text=True, check=True,
                   capture_output=True, timeout=30)


def test_ssh_config_proxy_jump_reaches_a_device_only_the_jump_host_can_see(netns_farm, client_key, ssh_opts,
                                                                         bundles):
    from edgec.deploy.push import push_bundle

    jump, board = netns_farm.add(1), netns_farm.add(2)
    trust(jump, ssh_opts)
    trust(board, ssh_opts)
    only_reachable_from(netns_farm, board, jump)
    Path(ssh_opts.ssh_config).write_text(
        f"Host bastion\n  HostName {jump.address}\n  User root\n  IdentityFile {client_key}\n"
        f"Host board\n  HostName {board.address}\n  User root\n  IdentityFile {client_key}\n  ProxyJump bastion\n"
        f"Host board-direct\n  HostName {board.address}\n  User root\n  IdentityFile {client_key}\n")
    quick = replace(ssh_opts, connect_timeout=2, retries=0)
    with pytest.raises(DeviceError, match="cannot connect after 1 attempts"):
        connect(SshTarget(host="board-direct"), quick)  # this host cannot reach the board itself
    with connect(SshTarget(host="board"), ssh_opts) as conn:
        assert conn.run("echo $HOME").stdout.strip() == str(board.home)
        assert conn.run("echo $SSH_CONNECTION").stdout.split()[0] == jump.address  # it came from the jump host
        report = push_bundle(conn, bundles["small"])  # SFTP through the jump works too
        assert conn.stat(f"{report.remote_dir}/manifest.json") is not None
        jump_transport = conn.client.jumps[0].get_transport()
    assert not jump_transport.is_active()  # closing the connection closed the jump host's too
    # A chain (`a,b`) goes through each in turn; `user@host:port` entries need no config of their own.
    Path(ssh_opts.ssh_config).write_text(
        f"Host *\n  IdentityFile {client_key}\n"
        f"Host board\n  HostName {board.address}\n  User root\n  ProxyJump root@{jump.address}:22,root@{jump.address}\n")
    with connect(SshTarget(host="board"), ssh_opts) as conn:
        assert len(conn.client.jumps) == 2 and conn.run("true").exit_code == 0


def test_proxy_jump_host_keys_are_checked_too(netns_farm, client_key, ssh_opts):
    jump, board = netns_farm.add(1), netns_farm.add(2)
    trust(board, ssh_opts)  # but not the jump host
    Path(ssh_opts.ssh_config).write_text(
        f"Host board\n  HostName {board.address}\n  User root\n  IdentityFile {client_key}\n"
        f"  ProxyJump root@{jump.address}\n")
    with pytest.raises(HostKeyError, match=rf"jump host {jump.address} .*unknown host key .*--trust-new-host"):
        connect(SshTarget(host="board"), ssh_opts)
    Path(ssh_opts.ssh_config).write_text(
        f"Host board\n  HostName {board.address}\n  ProxyJump root@{jump.address}\n  ProxyCommand nc %h %p\n")
    with pytest.raises(DeviceError, match="sets both ProxyCommand and ProxyJump; keep one"):
        connect(SshTarget(host="board"), ssh_opts)
