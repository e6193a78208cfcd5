"""The CLI over real sshd devices: push, bench --device, farm bench --json, Ctrl-C, results."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from farm_testbed import BARE_PYTHON, edgec, inventory

REPO = Path(__file__).resolve().parents[2]


def test_push_refuses_unknown_host_then_trusts_it_then_sends_nothing(sshd, home, bundles):
    server = sshd()
    spec = f"root@127.0.0.1:{server.port}"
    bundle = str(bundles["small"].path)
    refused = edgec(home, "push", bundle, "--device", spec)
    assert refused.returncode == 8
    assert "unknown host key" in refused.stderr and "--trust-new-host" in refused.stderr
    first = edgec(home, "push", bundle, "--device", spec, "--trust-new-host", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["bytes_sent"] > 0
    assert f"[127.0.0.1]:{server.port} ssh-ed25519" in (home / ".ssh" / "known_hosts").read_text()
    again = edgec(home, "push", bundle, "--device", spec)
    assert again.returncode == 0 and "already on the device" in again.stdout and "nothing sent" in again.stdout


def test_bench_on_a_device_without_runtime_exits_7_with_the_install_command(sshd, home, bundles):
    server = sshd()
    inv = inventory(home, [("bare", server, BARE_PYTHON)])
    done = edgec(home, "bench", str(bundles["small"].path), "--device", "bare", "--inventory", str(inv),
                 "--trust-new-host")
    assert done.returncode == 7
    assert f"install it on the device with `{BARE_PYTHON} -m pip install numpy onnxruntime`" in done.stderr


def test_bench_on_a_remote_device_prints_and_stores_the_result(sshd, home, bundles, device_python):
    server = sshd()
    inv = inventory(home, [("pi", server, device_python)])
    done = edgec(home, "bench", str(bundles["small"].path), "--device", "pi", "--inventory", str(inv),
                 "--trust-new-host", "--runs", "20", "--idle", "0", "--json",
                 "--connect-timeout", "5", "--stall-timeout", "5", "--transfer-retries", "1")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["bundle_id"] == bundles["small"].bundle_id and doc["latency_ms"]["count"] == 20
    listed = json.loads(edgec(home, "results", "list", "--json").stdout)  # default ~/.edgec/results.db
    assert [(r["device"], r["status"]) for r in listed] == [("pi", "ok")]
    server.stop()  # the SSH options reach the connection: a gone device fails after 1 + 3 retries, quickly
    gone = edgec(home, "bench", str(bundles["small"].path), "--device", "pi", "--inventory", str(inv),
                 "--runs", "20", "--connect-timeout", "0.5")
    assert gone.returncode != 0 and "cannot connect after 4 attempts" in gone.stderr


def test_remote_estimated_power_uses_the_device_profile_not_the_host(sshd, home, bundles, device_python):
    server = sshd()
    inv = inventory(home, [("pi", server, device_python)])  # target = "rpi4": 2.7 W idle, 6.4 W active
    done = edgec(home, "bench", str(bundles["small"].path), "--device", "pi", "--inventory", str(inv),
                 "--trust-new-host", "--runs", "20", "--idle", "0.2", "--power", "estimated", "--json")
    assert done.returncode == 0, done.stderr
    power = json.loads(done.stdout)["power"]
    assert power["source"] == "estimated" and power["measured"] is False
    assert (power["idle_watts"], power["active_watts"]) == (2.7, 6.4)


def test_farm_bench_json_is_one_document_and_quiet_on_a_pipe(sshd, home, bundles, device_python):
    good, bare = sshd("good"), sshd("bare")
    inv = inventory(home, [("good", good, device_python), ("bare", bare, BARE_PYTHON)])
    done = edgec(home, "farm", "bench", str(bundles["small"].path), "--inventory", str(inv), "--trust-new-host",
                 "--runs", "20", "--json")
    assert done.returncode == 8
    assert "\x1b[" not in done.stderr  # no live display when stderr is not a terminal
    doc = json.loads(done.stdout)
    by_name = {d["device"]: d for d in doc["devices"]}
    assert by_name["good"]["ok"] and by_name["good"]["result"]["latency_ms"]["count"] == 20
    assert by_name["bare"]["error"]["type"] == "RuntimeMissingError"
    shown = edgec(home, "results", "show", str(by_name["good"]["run_id"]), "--json")
    assert json.loads(shown.stdout)["result"]["bundle_id"] == bundles["small"].bundle_id
    listed = edgec(home, "results", "list", "--farm-run", doc["farm_run"])
    assert listed.returncode == 0 and "RuntimeMissingError" in listed.stdout
    again = edgec(home, "bench", str(bundles["small"].path), "--device", "good", "--inventory", str(inv),
                  "--runs", "20", "--idle", "0", "--json")
    assert again.returncode == 0, again.stderr
    first = by_name["good"]["result"]["latency_ms"]["mean"]
    second = json.loads(again.stdout)["latency_ms"]["mean"]
    (latest, *_) = json.loads(edgec(home, "results", "list", "--device", "good", "--json").stdout)
    assert latest["id"] != by_name["good"]["run_id"]
    compared = json.loads(edgec(home, "results", "compare", str(by_name["good"]["run_id"]), str(latest["id"]),
                                "--json").stdout)
    mean = next(m for m in compared["metrics"] if m["metric"] == "latency_ms_mean")
    assert compared["same_bundle"] and (mean["base"], mean["other"]) == pytest.approx((first, second))
    assert mean["ratio"] == pytest.approx(second / first, rel=1e-3)
    check = edgec(home, "farm", "check", "--inventory", str(inv), "--json")
    rows = {r["device"]: r for r in json.loads(check.stdout)}
    assert check.returncode == 0
    assert rows["good"]["runtimes"]["onnxruntime"] and not rows["bare"]["runtimes"]["onnxruntime"]
    assert rows["good"]["store"]["bundles"] == 1 and rows["good"]["store"]["bundle_bytes"] > 0  # the bench pushed it
    assert rows["bare"]["store"] == {"bundles": 0, "bundle_bytes": 0, "partial_bytes": 0}
    table_view = edgec(home, "farm", "check", "--inventory", str(inv))
    assert "bundles" in table_view.stdout.splitlines()[0] and " 1 (" in table_view.stdout
    ready = edgec(home, "farm", "check", "--inventory", str(inv), "--bundle", str(bundles["small"].path), "--json")
    rows = {r["device"]: r for r in json.loads(ready.stdout)}
    assert ready.returncode == 8 and rows["good"]["ok"] and rows["good"]["runtime"] == "onnxruntime"
    assert not rows["bare"]["ok"] and rows["bare"]["error"]["type"] == "RuntimeMissingError"


def test_ctrl_c_stops_the_farm_and_keeps_finished_results(sshd, home, bundles, device_python, tmp_path):
    stuck = tmp_path / "stuck-python"  # a device whose benchmark never ends
    benching = tmp_path / "stuck-is-benching"  # touched when the stuck device is asked to bench
    stuck.write_text(  # the agent's serve session hangs once it is asked to bench
        '#!/bin/sh\ncase "$*" in *serve*)\n'
        f'  while IFS= read -r line; do case "$line" in *\'"bench"\'*) touch {benching}; sleep 300;; esac; '
        'printf "%s\\n" "$line"; done'
        f' | {device_python} "$@"; exit;;\nesac\nexec {device_python} "$@"\n')
    stuck.chmod(0o755)
    servers = [sshd(f"d{i}") for i in range(3)]
    inv = inventory(home, [("fast1", servers[0], device_python), ("fast2", servers[1], device_python),
                           ("stuck", servers[2], str(stuck))])
    env = {**os.environ, "HOME": str(home), "EDGEC_HOME": str(home / ".edgec"), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "edgec", "farm", "bench", str(bundles["small"].path),
                             "--inventory", str(inv), "--trust-new-host", "--runs", "20"],
                            env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = home / ".edgec" / "results.db"
    deadline = time.monotonic() + 120  # liveness only: the two fast devices finish and the stuck one is benching
    while time.monotonic() < deadline:
        if (benching.exists() and db.exists()
                and sqlite3.connect(db).execute("SELECT count(*) FROM runs").fetchone()[0] == 2):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the fast devices did not finish or the stuck one was never asked to bench")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "interrupted; finished devices were kept" in err
    rows = sqlite3.connect(db).execute("SELECT device, status FROM runs ORDER BY device").fetchall()
    assert rows == [("fast1", "ok"), ("fast2", "ok")]
    assert "fast1" in out and "fast2" in out


def test_farm_prune_dry_run_then_prune(sshd, home, bundles, device_python):
    server = sshd()
    inv = inventory(home, [("pi", server, device_python)])
    for name in ("small", "small2"):
        pushed = edgec(home, "push", str(bundles[name].path), "--device", "pi", "--inventory", str(inv),
                       "--trust-new-host")
        assert pushed.returncode == 0, pushed.stderr
    dry = edgec(home, "farm", "prune", "--inventory", str(inv), "--keep", "1", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    (row,) = json.loads(dry.stdout)
    assert row["dry_run"] and len(row["removed"]) == 1 and len(row["kept"]) == 1 and row["freed_bytes"] > 0
    done = edgec(home, "farm", "prune", "--inventory", str(inv), "--keep", "1")
    assert done.returncode == 0, done.stderr
    assert "freed" in done.stdout and "pi" in done.stdout
    assert sorted(p.name for p in (server.home / ".edgec" / "bundles").iterdir()) == row["kept"]
