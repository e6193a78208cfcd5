"""Sweeps and farms on a real Ray cluster: a head and a second node, as separate process groups on this machine.

The head serves site ``lab-a`` and the worker site ``lab-b``; devices are real sshd servers on loopback. The
tests run in file order on one xdist worker (they share the cluster); the last one kills the worker node.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray_testbed import RayCluster, free_port

pytest.importorskip("ray", reason="Ray is part of the test install (setup.cfg extra 'cluster'); this run lacks it")

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray-cluster")]
REPO = Path(__file__).resolve().parents[2]
VARIANTS = "fp32,int8,prune30,prune50,sparse50,prune30+int8"


@pytest.fixture(scope="module")
def home(tmp_path_factory, client_key) -> Path:
    """HOME of the driver and of every node: its ~/.ssh holds the test key and the known hosts the nodes learn."""
    home = tmp_path_factory.mktemp("cluster_home")
    (home / ".ssh").mkdir()
    shutil.copy(client_key, home / ".ssh" / "id_ed25519")
    return home


@pytest.fixture(scope="module")
def known_hosts(home, devices):
    """The devices' host keys, known to every node before the tests (nodes share this HOME here)."""
    (home / ".ssh" / "known_hosts").write_text("".join(s.host_key_line() for s in devices.values()))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, home):
    env = {"HOME": str(home), "EDGEC_HOME": str(home / ".edgec"), "PYTHONPATH": str(REPO)}
    ray = RayCluster(tmp_path_factory.mktemp("ray"), env=env)
    try:
        ray.start_node("head", {"site:lab-a": 1}, head=True)
        ray.start_node("worker", {"site:lab-b": 1})
        ray.wait_nodes(2)
        yield ray
    finally:
        ray.stop()


@pytest.fixture(scope="module")
def devices(tmp_path_factory, client_key):
    from farm_testbed import SshServer

    root = tmp_path_factory.mktemp("cluster_devices")
    servers = {name: SshServer(root=root / name, client_pub=Path(f"{client_key}.pub").read_text()).start()
               for name in ("a1", "a2", "b1", "b2")}
    yield servers
    for server in servers.values():
        server.stop()


def edgec(home: Path, *args: str, timeout: float = 600, wait: bool = True):
    env = {**os.environ, "HOME": str(home), "EDGEC_HOME": str(home / ".edgec"), "PYTHONPATH": str(REPO)}
    env.pop("EDGEC_CLUSTER", None)
    argv = [sys.executable, "-m", "edgec", *args]
    if not wait:
        return subprocess.Popen(argv, env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(argv, env=env, cwd=home, capture_output=True, text=True, timeout=timeout)


def write_inventory(path: Path, devices: dict, client_key: Path, extra: str = "", python: str = sys.executable
                    ) -> Path:
    rows = [f'[[device]]\nname = "{name}"\nhost = "127.0.0.1"\nport = {server.port}\nuser = "root"\n'
            f'key = "{client_key}"\npython = "{python}"\nsite = "lab-{name[0]}"\n'
            for name, server in devices.items()]
    path.write_text("".join(rows) + extra)
    return path


def test_an_unreachable_cluster_fails_in_bounded_time_with_one_line(tmp_path, bundles):
    closed = free_port()  # nothing listens there
    started = time.monotonic()
    done = edgec(tmp_path, "farm", "bench", str(bundles["small"].path), "--inventory", str(tmp_path / "none.toml"),
                 "--cluster", f"127.0.0.1:{closed}", timeout=120)
    # No inventory yet: the inventory error comes first. With one, the cluster is what fails.
    assert done.returncode == 3, done.stderr
    inv = tmp_path / "devices.toml"
    inv.write_text('[[device]]\nname = "x"\nhost = "127.0.0.1"\n')
    done = edgec(tmp_path, "farm", "bench", str(bundles["small"].path), "--inventory", str(inv),
                 "--cluster", f"127.0.0.1:{closed}", timeout=120)
    assert done.returncode == 10, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{closed}" in lines[0] and "ray start --head" in lines[0]
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 100  # liveness: bounded by the probe, not by Ray's retry loop
    bad = edgec(tmp_path, "farm", "bench", str(bundles["small"].path), "--inventory", str(inv), "--cluster", "nowhere")
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr


def _runs(db: Path) -> list[dict]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    return [dict(r) for r in con.execute("SELECT * FROM runs ORDER BY id")]


def test_farm_bench_runs_each_device_on_its_sites_node_once_at_a_time(cluster, devices, known_hosts, home, bundles,
                                                                      client_key, tmp_path):
    slow = tmp_path / "slowpython"  # each benchmark session starts 3 s late: long enough for the drivers to collide
    slow.write_text(f'#!/bin/sh\ncase "$*" in *serve*) sleep 3;; esac\nexec {sys.executable} "$@"\n')
    slow.chmod(0o755)
    inv = write_inventory(tmp_path / "devices.toml", devices, client_key, python=str(slow),
                          extra='[[device]]\nname = "z1"\nhost = "127.0.0.1"\nport = 9\nsite = "lab-z"\n')
    db = tmp_path / "results.db"
    common = ["farm", "bench", str(bundles["small"].path), "--inventory", str(inv),
              "--runs", "30", "--results", str(db), "--cluster", cluster.address, "--json"]
    # Two drivers at once on the same devices: each device must still run one benchmark at a time.
    first, second = edgec(home, *common, wait=False), edgec(home, *common, wait=False)
    outs = [proc.communicate(timeout=600) for proc in (first, second)]
    for proc, (out, err) in zip((first, second), outs):
        assert proc.returncode == 8, err  # z1's site has no node: that device fails, the rest run
        doc = json.loads(out)
        by_name = {d["device"]: d for d in doc["devices"]}
        assert sorted(by_name) == ["a1", "a2", "b1", "b2", "z1"]
        assert not by_name["z1"]["ok"] and "lab-z" in by_name["z1"]["error"]["message"]
        assert "ray start" in by_name["z1"]["error"]["message"]
        assert all(by_name[n]["ok"] for n in ("a1", "a2", "b1", "b2")), by_name
    nodes = cluster.node_ids()
    runs = _runs(db)
    assert len(runs) == 10  # 5 devices x 2 drivers, each stored once
    windows: dict[str, list] = {}
    for run in runs:
        if run["device"] == "z1":
            assert run["status"] == "error" and run["error_type"] == "ClusterError"
            continue
        placed = json.loads(run["result_json"])["cluster"]
        assert placed["node_id"] == nodes[f"site:lab-{run['device'][0]}"], run["device"]
        windows.setdefault(run["device"], []).append((placed["started"], placed["finished"], placed["submitted"]))
    contended = 0
    for device, spans in windows.items():
        first, second = sorted(spans)
        assert first[1] <= second[0], f"{device} ran two benchmarks at once: {spans}"
        contended += second[2] < first[1]  # asked for while the other driver's benchmark still ran
    assert contended >= 1, f"the two drivers never asked for the same device at once: {windows}"


def test_ctrl_c_stops_the_cluster_farm_and_keeps_finished_results(cluster, devices, known_hosts, home, bundles,
                                                                 client_key, tmp_path):
    stuck = tmp_path / "stuck-python"  # b9's benchmark never ends (names of its own: the per-device actors of earlier
    # tests keep their device definitions): its serve session hangs once asked to bench
    benching = tmp_path / "stuck-is-benching"
    stuck.write_text(
        '#!/bin/sh\ncase "$*" in *serve*)\n'
        f'  while IFS= read -r line; do case "$line" in *\'"bench"\'*) touch {benching}; sleep 300;; esac; '
        'printf "%s\\n" "$line"; done'
        f' | {sys.executable} "$@"; exit;;\nesac\nexec {sys.executable} "$@"\n')
    stuck.chmod(0o755)
    inv = write_inventory(tmp_path / "a.toml", {"a9": devices["a1"]}, client_key)
    inv.write_text(inv.read_text() + write_inventory(tmp_path / "b.toml", {"b9": devices["b1"]}, client_key,
                                                     python=str(stuck)).read_text())
    db = tmp_path / "results.db"
    proc = edgec(home, "farm", "bench", str(bundles["small"].path), "--inventory", str(inv), "--runs", "20",
                 "--results", str(db), "--cluster", cluster.address, wait=False)
    deadline = time.monotonic() + 300  # liveness only: a9 finishes and b9 is benching
    while time.monotonic() < deadline:
        if benching.exists() and db.exists() and len(_runs(db)) == 1:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"a9 did not finish or b9 was never asked to bench: {proc.communicate()[1][-2000:]}")
    proc.send_signal(signal.SIGINT)  # once: the loop sees an event, no KeyboardInterrupt inside ray.wait
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; finished devices were kept" in err and "Traceback" not in err
    assert [(r["device"], r["status"]) for r in _runs(db)] == [("a9", "ok")]
    assert "a9" in out


def test_farm_check_through_the_cluster(cluster, devices, known_hosts, home, client_key, tmp_path):
    inv = write_inventory(tmp_path / "devices.toml", {"b1": devices["b1"]}, client_key)
    done = edgec(home, "farm", "check", "--inventory", str(inv), "--json",
                 "--cluster", cluster.address)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["ok"] and row["node_id"] == cluster.node_ids()["site:lab-b"]
    assert row["runtimes"]["onnxruntime"]


def test_deploy_through_the_cluster_activates_each_device_from_its_site(cluster, devices, known_hosts, home,
                                                                        bundles, client_key, tmp_path):
    from serve_testbed import active_id, stop_services

    chosen = {name: devices[name] for name in ("a2", "b2")}
    inv = write_inventory(tmp_path / "devices.toml", chosen, client_key)
    db = tmp_path / "results.db"
    try:
        done = edgec(home, "deploy", str(bundles["small"].path), "--device", "a2", "--device", "b2", "--inventory",
                     str(inv), "--port", "0", "--results", str(db), "--json", "--cluster", cluster.address)
        assert done.returncode == 0, done.stderr
        outcomes = {d["device"]: d for d in json.loads(done.stdout)["devices"]}
        assert {n: o["status"] for n, o in outcomes.items()} == {"a2": "ok", "b2": "ok"}
        for server in chosen.values():  # each device's store now points at the bundle, and its service serves it
            assert active_id(server.home) == bundles["small"].bundle_id
        rows = sqlite3.connect(db).execute("SELECT device, action, status FROM rollouts ORDER BY device").fetchall()
        assert rows == [("a2", "deploy", "ok"), ("b2", "deploy", "ok")]  # recorded on the driver
        canary = edgec(home, "deploy", str(bundles["small"].path), "--device", "a2", "--inventory", str(inv),
                       "--canary", "1", "--cluster", cluster.address)
        assert canary.returncode == 2 and "--canary with --cluster" in canary.stderr
    finally:
        stop_services([server.home for server in chosen.values()])


def test_targets_calibrate_measures_from_the_sites_node_and_writes_here(cluster, devices, known_hosts, home,
                                                                        client_key, tmp_path):
    inv = write_inventory(tmp_path / "devices.toml", {"b2": devices["b2"]}, client_key)
    driver_home = tmp_path / "driver"  # the overlay lands in the driver's EDGEC_HOME, not the node's
    env_home = {**os.environ, "HOME": str(home), "EDGEC_HOME": str(driver_home), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "edgec", "targets", "calibrate", "--device", "b2", "--as", "b2-lab",
                           "--base", "rpi4", "--quick", "--inventory", str(inv), "--json", "--cluster",
                           cluster.address], env=env_home, cwd=home, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["name"] == "b2-lab" and doc["base"] == "rpi4"
    assert Path(doc["path"]) == driver_home / "targets" / "b2-lab.toml" and Path(doc["path"]).is_file()
    kernels = doc["performance"]["measured"]["kernels"]
    assert sum(k["status"] == "ok" for k in kernels) >= 3
    assert not (home / ".edgec" / "targets" / "b2-lab.toml").exists()  # the node wrote nothing of its own


def test_a_sweep_survives_losing_the_worker_node(cluster, home, tiny_mobilenet_onnx, tmp_path):
    """Six variants; the worker node is killed while it compiles one: every variant still lands, once."""
    import numpy as np

    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32))
    db = tmp_path / "results.db"
    proc = edgec(home, "sweep", str(tiny_mobilenet_onnx), "--variants", VARIANTS, "--calibration", str(calib),
                 "--max-accuracy-drop", "100", "--runs", "5", "--warmup", "1", "--workdir", str(tmp_path / "sweep"),
                 "--results", str(db), "-o", str(tmp_path / "sweep.html"), "--json", "--cluster", cluster.address,
                 wait=False)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if any("compile_variant" in cmd for cmd in cluster.processes("worker").values()):
            break
        time.sleep(0.2)
    else:
        pytest.fail("no compile task ever ran on the worker node")
    cluster.kill_node("worker")
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    outcomes = json.loads(out)["outcomes"]
    assert sorted(o["label"] for o in outcomes) == sorted(VARIANTS.split(","))
    assert all(o["status"] == "ok" for o in outcomes), outcomes
    head = cluster.node_ids()["site:lab-a"]
    assert any(o["compile_node"] == head for o in outcomes)
    runs = _runs(db)
    labels = [json.loads(r["result_json"])["sweep"]["label"] for r in runs]
    assert sorted(labels) == sorted(VARIANTS.split(","))  # each result stored exactly once
    assert not list((tmp_path / "sweep").glob(".*tmp-*"))  # nothing half-written left behind
