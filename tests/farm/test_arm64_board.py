"""The emulated aarch64 board: a Debian arm64 root under qemu-user with its own sshd in a network namespace.

Built once (scripts/testbed/build-arm64-root.sh, cached outside the repository in /var/cache/edgec/arm64-root
or $EDGEC_ARM64_ROOT; a few minutes the first time, instant after), then `edgec farm bench` runs a bundle on it
end to end: agent install, runtime check, push, sha256 check and benchmark, all executed by arm64 binaries.
"""

from __future__ import annotations

import json
import os
import re
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


def farm_bench(board, client_key, bundle: Path, home: Path) -> dict:
    """``edgec farm bench BUNDLE`` on the board, through the CLI as a user runs it; the device's JSON record."""
    home.mkdir(exist_ok=True)
    inv = home / "devices.toml"
    inv.write_text(f'[[device]]\nname = "pi4-emu"\nhost = "{board.address}"\nuser = "root"\n'
                   f'key = "{client_key}"\ntarget = "rpi4"\ntags = ["rpi4"]\n')
    env = {**os.environ, "HOME": str(home), "EDGEC_HOME": str(home / ".edgec"), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "edgec", "farm", "bench", str(bundle),
                           "--inventory", str(inv), "--tag", "rpi4", "--trust-new-host", "--runs", "10",
                           "--warmup", "2", "--timeout", "600", "--json"],
                          env=env, cwd=home, capture_output=True, text=True, timeout=900)
    assert done.returncode in (0, 8), done.stdout[-3000:] + done.stderr[-3000:]
    (device,) = json.loads(done.stdout)["devices"]
    return device


def test_farm_bench_runs_a_bundle_on_the_emulated_arm64_board(arm64_board, client_key, bundles, tmp_path):
    device = farm_bench(arm64_board, client_key, bundles["small"].path, tmp_path / "user")
    result = device["result"]
    assert device["ok"] and result["bundle_id"] == bundles["small"].bundle_id
    assert result["conditions"]["cpu"]["arch"] == "aarch64"
    assert result["runtime"]["name"] == "onnxruntime"
    assert all(out["ok"] for out in result["check"]["outputs"])
    assert result["latency_ms"]["count"] == 10
    stored = arm64_board.home / ".edgec" / "bundles" / bundles["small"].bundle_id / "model.onnx"
    assert stored.is_file()


def softmax_onnx(path: Path) -> Path:
    """MatMul [1,256]x[256,256] then Softmax. A plain MatMul comes out bit for bit the same on x86 and arm64
    onnxruntime (both accumulate in order with FMA); Softmax's vectorised sum (16 lanes on AVX-512, 4 on NEON)
    rounds differently: ~3e-8 relative, measured here."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(7).standard_normal((256, 256)).astype(np.float32) / 16
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Softmax", ["h"], ["y"], axis=-1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])], [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_the_reference_check_sees_the_arm64_runtime_differ_and_fails_only_beyond_tolerance(
        arm64_board, client_key, tmp_path):
    """The bundle's reference outputs come from x86 onnxruntime on the compiling machine; arm64 onnxruntime (other
    kernels, another summation order) differs from them a little. Within the bundle's tolerance the device accepts
    it and reports the difference it measured; the same bundle with a reference tolerance tighter than that
    difference (its manifest rewritten: a new bundle id) is refused on the device, and still passes here."""
    from edgec import api
    from edgec.bundle import MANIFEST_NAME, Bundle, manifest_bytes

    source = softmax_onnx(tmp_path / "softmax.onnx")
    bundle = api.compile(str(source), tmp_path / "softmax.bundle", target="rpi4", format="onnx")
    device = farm_bench(arm64_board, client_key, bundle.path, tmp_path / "user")
    assert device["ok"], device.get("error")
    (record,) = device["result"]["check"]["outputs"]
    assert record["ok"] and record["rel_diff"] <= bundle.manifest["reference"]["rtol"]
    assert record["rel_diff"] > 0, "arm64 onnxruntime reproduced the x86 reference bit for bit"

    tight = tmp_path / "tight.bundle"
    shutil.copytree(bundle.path, tight)
    manifest = json.loads((tight / MANIFEST_NAME).read_text())
    manifest["reference"].update(rtol=record["rel_diff"] / 4, atol=0.0)
    (tight / MANIFEST_NAME).write_bytes(manifest_bytes(manifest))
    assert api.verify_bundle(tight)["ok"]  # the compiling machine's runtime reproduces its own reference
    refused = farm_bench(arm64_board, client_key, tight, tmp_path / "user")
    assert not refused["ok"] and refused["error"]["type"] == "BundleError"
    message = refused["error"]["message"]
    assert "output 'y' does not match the bundle's reference on this device" in message
    shown = float(re.search(r"relative ([^,\s]+),", message).group(1))
    assert shown == pytest.approx(record["rel_diff"], rel=0.01)
    assert Bundle(tight).bundle_id != bundle.bundle_id
