"""Fixtures of the test farm: real sshd servers (loopback and network namespaces) and test bundles."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from farm_testbed import DEVICE_PYTHON, NetnsFarm, SshServer, have_root_tools, make_key, tiny_onnx

from edgec.deploy.ssh import SshOptions


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/farm/" in str(item.fspath):
            item.add_marker(pytest.mark.farm)


@pytest.fixture(scope="session", autouse=True)
def edgec_home(tmp_path_factory):
    """Agent builds and default results go to a temporary EDGEC_HOME, never the real ~/.edgec."""
    with pytest.MonkeyPatch.context() as patch:
        home = tmp_path_factory.mktemp("edgec_home")
        patch.setenv("EDGEC_HOME", str(home))
        yield home


@pytest.fixture
def device_python(tmp_path) -> str:
    """A device interpreter (the venv's, which has numpy + onnxruntime) that logs each call in $HOME."""
    wrapper = tmp_path / "devpython"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "$HOME/agent-calls.log"\nexec {DEVICE_PYTHON} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.fixture(scope="session")
def farm_ok():
    reason = have_root_tools()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def client_key(tmp_path_factory, farm_ok) -> Path:
    return make_key(tmp_path_factory.mktemp("client") / "id_ed25519")


@pytest.fixture
def ssh_opts(tmp_path) -> SshOptions:
    return SshOptions(known_hosts=str(tmp_path / "known_hosts"), ssh_config=str(tmp_path / "ssh_config"),
                      connect_timeout=5, stall_timeout=3, retries=1, backoff=0.2, command_timeout=60)


@pytest.fixture
def sshd(tmp_path, client_key):
    """Factory: ``sshd(name, **kw) -> SshServer`` on a loopback port; stopped by PID on teardown."""
    servers = []

    def start(name: str = "dev", **kw) -> SshServer:
        server = SshServer(root=tmp_path / name, client_pub=Path(f"{client_key}.pub").read_text(), **kw).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def netns_farm(tmp_path, client_key):
    farm = NetnsFarm(tmp_path, Path(f"{client_key}.pub").read_text())
    try:
        yield farm
    finally:
        farm.close()


@pytest.fixture(scope="session")
def bundles(tmp_path_factory):
    """Three real bundles (edgec.api.compile): small, another small, and a ~1 MB one."""
    from edgec import api

    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for name, n, seed in (("small", 64, 0), ("small2", 64, 1), ("big", 512, 2)):
        source = tiny_onnx(root / f"{name}.onnx", n, seed)
        out[name] = api.compile(str(source), root / f"{name}.bundle", target="rpi4", format="onnx")
    return out


@pytest.fixture
def home(tmp_path, client_key):
    """A HOME with ~/.ssh/id_ed25519 (found like OpenSSH finds keys) and an EDGEC_HOME under it."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(client_key, home / ".ssh" / "id_ed25519")
    return home
