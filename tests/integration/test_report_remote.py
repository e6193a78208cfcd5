"""``edgec sweep`` on a remote device: a real sshd on loopback (the farm test bed) with the venv's Python as the
device interpreter, beside ``local``; both devices land in the results database and the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.farm.farm_testbed import SshServer, have_root_tools, make_key
from tests.support.html_tables import Tables
from tests.support.models import mlp_onnx

pytestmark = pytest.mark.xdist_group("report_remote")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def device(tmp_path):
    """An sshd 'device' and a HOME holding the client key and an inventory naming it 'pi'."""
    reason = have_root_tools()
    if reason:
        pytest.skip(f"no SSH test device here: {reason}")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    key = make_key(home / ".ssh" / "id_ed25519")
    server = SshServer(root=tmp_path / "pi", client_pub=Path(f"{key}.pub").read_text()).start()
    (home / "devices.toml").write_text(f'[[device]]\nname = "pi"\nhost = "127.0.0.1"\nport = {server.port}\n'
                                       f'user = "root"\ntarget = "rpi4"\npython = "{sys.executable}"\n')
    try:
        yield home
    finally:
        server.stop()


def test_a_sweep_benchmarks_on_a_remote_device_and_locally(device, tmp_path):
    model = mlp_onnx(tmp_path / "mlp.onnx", 32, 4)
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).random((32, 64), dtype=np.float32))
    env = {**os.environ, "HOME": str(device), "EDGEC_HOME": str(device / ".edgec"), "PYTHONPATH": str(REPO)}
    env.pop("SSH_AUTH_SOCK", None)
    out = tmp_path / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "edgec", "sweep", str(model), "--target", "host", "--format", "onnx", "--input-shape",
         "x=1x64", "--variants", "fp32,int8", "--calibration", str(tmp_path / "calib.npz"), "--max-accuracy-drop",
         "50", "--device", "local", "--device", "pi", "--inventory", str(device / "devices.toml"),
         "--trust-new-host", "--runs", "20", "--warmup", "2", "--idle", "0", "--workdir", str(tmp_path / "b"),
         "--results", str(tmp_path / "results.db"), "-o", str(out), "--json"],
        env=env, cwd=device, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    outcomes = json.loads(done.stdout)["outcomes"]
    assert [(o["label"], o["device"], o["status"]) for o in outcomes] == [
        ("fp32", "local", "ok"), ("fp32", "pi", "ok"), ("int8", "local", "ok"), ("int8", "pi", "ok")]
    tables = Tables(out.read_text())
    for name in ("local", "pi"):
        summary, _details = tables.find("bundle", f"Device {name}")
        labels = sorted(cells[0].split()[0] for _, cells in summary[1:])
        assert labels == ["fp32", "int8"], name
    from edgec.deploy.results import ResultsStore

    with ResultsStore(tmp_path / "results.db") as store:
        remote = [r for r in store.list() if r["device"] == "pi"]
    assert len(remote) == 2 and all(r["profile"] == "rpi4" and "127.0.0.1" in r["address"] for r in remote)
