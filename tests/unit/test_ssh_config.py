"""How ~/.ssh/config settings become connection parameters (edgec.deploy._ssh_connect), without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgec.deploy._ssh_connect import SshOptions, SshTarget, _jump_target, _resolve
from edgec.errors import DeviceError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("spec", "expected"), [
    ("bastion", ("bastion", None, None)),
    ("pi@bastion", ("bastion", None, "pi")),
    ("pi@bastion:2222", ("bastion", 2222, "pi")),
    (" me@10.0.0.1:22 ", ("10.0.0.1", 22, "me")),
])
def test_proxy_jump_entries(spec, expected):
    target = _jump_target(spec, SshTarget("board"))
    assert (target.host, target.port, target.user) == expected
    assert target.label.startswith(f"jump host {expected[0]}")


@pytest.mark.parametrize("spec", ["bastion:ssh", "ssh://bastion", "pi@", ""])
def test_bad_proxy_jump_entries_name_the_entry(spec):
    with pytest.raises(DeviceError, match="ProxyJump entry"):
        _jump_target(spec, SshTarget("board"))


def resolve(tmp_path: Path, config: str, **options) -> dict:
    path = tmp_path / "config"
    path.write_text(config)
    return _resolve(SshTarget("board"), SshOptions(ssh_config=str(path), **options))


def test_proxy_jump_chain_and_host_key_settings(tmp_path):
    params = resolve(tmp_path, "Host board\n  HostName 10.1.2.3\n  ProxyJump a,pi@b:2222\n"
                               f"  UserKnownHostsFile {tmp_path}/farm_hosts {tmp_path}/more\n"
                               "  StrictHostKeyChecking accept-new\n")
    assert params["hostname"] == "10.1.2.3" and params["proxy_jump"] == ["a", "pi@b:2222"]
    assert params["proxy_command"] is None
    assert params["known_hosts"] == [tmp_path / "farm_hosts", tmp_path / "more"]
    assert params["trust_new_host"] is True


def test_an_explicit_known_hosts_option_wins_and_strict_checking_stays_on(tmp_path):
    params = resolve(tmp_path, f"Host board\n  UserKnownHostsFile {tmp_path}/farm_hosts\n"
                               "  StrictHostKeyChecking yes\n", known_hosts=str(tmp_path / "mine"))
    assert params["known_hosts"] == [tmp_path / "mine"] and params["trust_new_host"] is False
    assert params["proxy_jump"] == []


def test_proxy_command_and_proxy_jump_together_are_refused(tmp_path):
    with pytest.raises(DeviceError, match="sets both ProxyCommand and ProxyJump; keep one"):
        resolve(tmp_path, "Host board\n  ProxyJump a\n  ProxyCommand nc %h %p\n")
