"""The emulated aarch64 board: a Debian arm64 root under qemu-user with its own sshd in a network namespace.

Built once (scripts/testbed/build-arm64-root.sh, cached outside the repository in /var/cache/edgec/arm64-root
or $EDGEC_ARM64_ROOT; a few minutes the first time, instant after), then `edgec farm bench` runs a bundle on it
end to end: agent install, runtime check, push, sha256 check and benchmark, all executed by arm64 binaries.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from farm_testbed import NetnsFarm

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "scripts" / "testbed" / "build-arm64-root.sh"

pytestmark = [pytest.mark.xdist_group("arm64"), pytest.mark.slow]


@pytest.fixture(scope="session")
def arm64_root(farm_ok) -> Path:
    done = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=1800)
    if done.returncode == 3:
        pytest.skip(done.stderr.strip())  # e.g. no binfmt_misc on this machine: the reason is stated
    assert done.returncode == 0, done.stderr[-2000:]
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def arm64_board(arm64_root, tmp_path, client_key):
    farm = NetnsFarm(tmp_path, Path(f"{client_key}.pub").read_text())
    root = arm64_root / "run" / f"edgec-test-{secrets.token_hex(4)}"  # the server's files, inside the chroot
    try:
        yield farm.add(1, root=root, chroot=arm64_root)
    finally:
        farm.close()
        shutil.rmtree(root, ignore_errors=True)


def test_farm_bench_runs_a_bundle_on_the_emulated_arm64_board(arm64_board, client_key, bundles, tmp_path):
    home = tmp_path / "user"
    home.mkdir()
    inv = home / "devices.toml"
    inv.write_text(f'[[device]]\nname = "pi4-emu"\nhost = "{arm64_board.address}"\nuser = "root"\n'
                   f'key = "{client_key}"\ntarget = "rpi4"\ntags = ["rpi4"]\n')
    env = {**os.environ, "HOME": str(home), "EDGEC_HOME": str(home / ".edgec"), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "edgec", "farm", "bench", str(bundles["small"].path),
                           "--inventory", str(inv), "--tag", "rpi4", "--trust-new-host", "--runs", "10",
                           "--warmup", "2", "--timeout", "600", "--json"],
                          env=env, cwd=home, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (device,) = json.loads(done.stdout)["devices"]
    result = device["result"]
    assert device["ok"] and result["bundle_id"] == bundles["small"].bundle_id
    assert result["conditions"]["cpu"]["arch"] == "aarch64"
    assert result["runtime"]["name"] == "onnxruntime"
    assert all(out["ok"] for out in result["check"]["outputs"])
    assert result["latency_ms"]["count"] == 10
    stored = arm64_board.home / ".edgec" / "bundles" / bundles["small"].bundle_id / "model.onnx"
    assert stored.is_file()
