"""`edgec targets calibrate` end to end on the emulated arm64 board (qemu-user chroot) over real SSH.

Correctness only: timings under emulation mean nothing. The board is a Debian arm64 root with python3, numpy
and onnxruntime (scripts/testbed/build-arm64-root.sh, built once outside the repository) whose sshd runs in a
chroot on a loopback port; the agent and the micro-benchmark bundles are pushed to it and run there.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from farm_testbed import SshServer, trust

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def arm64_root(farm_ok) -> Path:
    script = REPO / "scripts" / "testbed" / "build-arm64-root.sh"
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=1200, check=False)
    if done.returncode == 3:
        pytest.skip(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def board(arm64_root, client_key):
    root = arm64_root / "srv" / f"edgec-calibrate-{secrets.token_hex(3)}"
    server = SshServer(root=root, client_pub=Path(f"{client_key}.pub").read_text(), chroot=arm64_root).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.xdist_group("arm64")
def test_calibrate_the_emulated_arm64_board_over_ssh(board, client_key, ssh_opts, tmp_path, edgec_home):
    from edgec.api import calibrate_target
    from edgec.targets import load_profile

    inventory = tmp_path / "devices.toml"
    inventory.write_text(f'[[device]]\nname = "pi-emu"\nhost = "{board.address}"\nport = {board.port}\n'
                         f'user = "root"\nkey = "{client_key}"\ntarget = "rpi4"\npython = "python3"\n')
    trust(board, ssh_opts)
    path, _ = calibrate_target("pi-emu", quick=True, threads=1, inventory=str(inventory), ssh=ssh_opts)

    assert path == edgec_home / "targets" / "pi-emu.toml"
    profile = load_profile("pi-emu")
    assert profile.base == "rpi4"  # the inventory's target
    measured = profile.performance.measured
    assert measured.device == "pi-emu" and measured.device_identity["machine"] == "aarch64"
    assert "Cortex-A72" in measured.device_identity["cpu_model"]  # the board's (emulated) /proc/cpuinfo
    assert measured.runtimes.get("onnxruntime") and "litert" not in measured.runtimes
    # The board has onnxruntime only: the overlay makes it the runtime, whatever rpi4 prefers.
    assert profile.runtime.available == ("onnxruntime",) and profile.runtime.format == "onnx"
    ok = {(k.op, k.precision) for k in measured.kernels if k.status == "ok"}
    assert {("conv3x3", "fp32"), ("dwconv", "fp32"), ("gemm", "fp32"), ("conv3x3", "int8")} <= ok
    assert measured.system.threads == 1 and measured.system.overhead_ms > 0
    # Everything ran on the board: the bundles are in its store, not only here.
    store = board.home / ".edgec" / "bundles"
    assert len(list(store.iterdir())) >= len(measured.kernels)
