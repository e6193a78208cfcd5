"""Content-addressed, verified, atomic push against real sshd servers, with injected faults."""

from __future__ import annotations

import json
import logging
import random
import shlex
import threading
import time

import pytest
from farm_testbed import DEVICE_PYTHON, trust

from edgec.deploy import push as push_module
from edgec.deploy.push import install_agent, push_bundle
from edgec.deploy.remote import agent_zipapp
from edgec.deploy.ssh import connect
from edgec.errors import DeviceError, TransferError


def store_listing(conn) -> list[str]:
    out = conn.run("ls -A ~/.edgec/bundles 2>/dev/null || true").stdout
    return sorted(out.split())


def bundle_runs_on_device(conn, remote_dir: str) -> bool:
    """The agent's `check` on the device: every sha256, then the reference inputs run through onnxruntime."""
    agent = install_agent(conn, agent_zipapp())
    result = conn.run(f"{DEVICE_PYTHON} {agent} check {shlex.quote(remote_dir)}", timeout=120)
    return result.exit_code == 0 and json.loads(result.stdout)["ok"] is True


def test_push_then_repeat_push_sends_no_bytes(sshd, client_key, ssh_opts, bundles):
    server = sshd()
    trust(server, ssh_opts)
    bundle = bundles["big"]
    with connect(server.device(client_key, "d1").ssh_target(), ssh_opts) as conn:
        first = push_bundle(conn, bundle)
        assert not first.already_there and first.bytes_sent > bundle.model_path.stat().st_size
        assert first.remote_dir == f"{server.home}/.edgec/bundles/{bundle.bundle_id}"
        assert bundle_runs_on_device(conn, first.remote_dir)
        again = push_bundle(conn, bundle)
        assert again.already_there and again.bytes_sent == 0
        assert store_listing(conn) == [bundle.bundle_id]
        conn.run(f"printf 'X' | dd of={first.remote_dir}/model.onnx bs=1 seek=5000 conv=notrunc 2>/dev/null")
        assert not bundle_runs_on_device(conn, first.remote_dir)  # the check does catch a damaged bundle


def test_interrupting_a_push_at_20_random_offsets_never_leaves_a_corrupt_bundle(sshd, client_key, ssh_opts,
                                                                                 bundles):
    server = sshd()
    trust(server, ssh_opts)
    old, new = bundles["small"], bundles["big"]
    target = server.device(client_key, "d1").ssh_target()
    with connect(target, ssh_opts) as conn:
        push_bundle(conn, old)
    total = sum(m["size"] for m in new.manifest["files"].values()) + (new.path / "manifest.json").stat().st_size
    offsets = sorted(random.Random(7).sample(range(1, total), 20))
    corrupt, interrupted = 0, 0
    for offset in offsets:
        killed = []

        def kill_at(sent, _total, offset=offset, killed=killed):
            if sent >= offset and not killed:
                killed.append(sent)
                server.kill()  # the device dies: sshd and its session, mid-transfer

        with connect(target, ssh_opts) as conn:
            try:
                push_bundle(conn, new, progress=kill_at)
            except (TransferError, DeviceError):
                interrupted += 1
        assert killed  # every offset is before the last byte, so every push was cut
        server.start()
        with connect(target, ssh_opts) as conn:
            complete = [n for n in store_listing(conn) if not n.startswith(".")]
            # Every bundle that looks complete must pass the agent's full check (all sha256 + reference run).
            corrupt += sum(not bundle_runs_on_device(conn, f"{server.home}/.edgec/bundles/{n}") for n in complete)
            assert complete == [old.bundle_id]  # the cut push left nothing that looks like a bundle
            assert store_listing(conn) == sorted([old.bundle_id, f".partial-{new.bundle_id}"])
            conn.run("rm -rf ~/.edgec/bundles/.partial-*")  # each push starts from scratch (see the next test)
    assert interrupted == 20
    assert corrupt == 0
    with connect(target, ssh_opts) as conn:  # and a clean push afterwards completes
        assert bundle_runs_on_device(conn, push_bundle(conn, new).remote_dir)


def test_previous_bundle_stays_usable_after_pushing_another(sshd, client_key, ssh_opts, bundles):
    server = sshd()
    trust(server, ssh_opts)
    with connect(server.device(client_key, "d1").ssh_target(), ssh_opts) as conn:
        a = push_bundle(conn, bundles["small"])
        b = push_bundle(conn, bundles["small2"])
        assert store_listing(conn) == sorted([bundles["small"].bundle_id, bundles["small2"].bundle_id])
        assert bundle_runs_on_device(conn, a.remote_dir) and bundle_runs_on_device(conn, b.remote_dir)


def no_resume(opts):
    return type(opts)(**{**opts.__dict__, "transfer_retries": 0})


def test_link_down_mid_transfer_is_freed_by_the_stall_watchdog(netns_farm, client_key, ssh_opts, bundles):
    server = netns_farm.add(1)
    trust(server, ssh_opts)
    with connect(server.device(client_key, "d1").ssh_target(), no_resume(ssh_opts)) as conn:
        netns_farm.rate_limit(server, "8mbit")  # so the link goes down while bytes are still flowing
        state = {}

        def cut(sent, total):
            if sent > 200_000 and "t" not in state:
                state["t"] = time.monotonic()
                netns_farm.link(server, up=False)

        with pytest.raises(TransferError, match=r"stalled .*no progress for 3 s"):
            push_bundle(conn, bundles["big"], progress=cut)
        # The message proves the watchdog (3 s) fired; the bound only proves it freed the push (a hung sftp.put
        # never returns), so it is generous: the machine may be loaded.
        assert time.monotonic() - state["t"] < 60
    netns_farm.link(server, up=True)
    with connect(server.device(client_key, "d1").ssh_target(), ssh_opts) as conn:
        assert bundles["big"].bundle_id not in store_listing(conn)


def device_has_part_of_the_model(server, at_least: int) -> bool:
    return any(p.stat().st_size >= at_least for p in server.home.glob(".edgec/bundles/.partial-*/model.onnx"))


def test_a_push_cut_by_a_link_outage_resumes_on_a_new_connection(netns_farm, client_key, ssh_opts, bundles):
    server = netns_farm.add(1)
    trust(server, ssh_opts)
    bundle = bundles["big"]
    cut = threading.Event()

    class LinkBackOnResume(logging.Handler):
        """The link comes back exactly when the push gives up on the old connection (its warning says so)."""

        def emit(self, record):
            if "reconnecting to resume" in record.getMessage():
                netns_farm.link(server, up=True)

    def outage(sent, _total):  # down once the device holds 100 kB of the model
        if not cut.is_set() and device_has_part_of_the_model(server, 100_000):
            cut.set()
            netns_farm.link(server, up=False)

    handler, logger = LinkBackOnResume(), logging.getLogger("edgec.deploy.push")
    logger.addHandler(handler)
    try:
        with connect(server.device(client_key, "d1").ssh_target(), ssh_opts) as conn:
            netns_farm.rate_limit(server, "8mbit")
            report = push_bundle(conn, bundle, progress=outage)
    finally:
        logger.removeHandler(handler)
    with connect(server.device(client_key, "d1").ssh_target(), ssh_opts) as conn:
        assert cut.is_set() and report.resumes == 1
        # It went on from the device's copy (at least the 100 kB seen there), not from the start.
        assert len(report.resumed_at) == 1 and report.resumed_at[0] >= 100_000
        assert store_listing(conn) == [bundle.bundle_id]  # the upload's temporary directory is gone
        assert bundle_runs_on_device(conn, report.remote_dir)


def test_the_next_push_continues_the_partial_upload_a_failed_push_left(netns_farm, client_key, ssh_opts, bundles):
    server = netns_farm.add(1)
    trust(server, ssh_opts)
    bundle = bundles["big"]
    with connect(server.device(client_key, "d1").ssh_target(), no_resume(ssh_opts)) as conn:
        netns_farm.rate_limit(server, "8mbit")

        def outage(sent, _total):
            if device_has_part_of_the_model(server, 300_000):
                netns_farm.link(server, up=False)

        with pytest.raises(TransferError, match="stalled"):
            push_bundle(conn, bundle, progress=outage)
    netns_farm.link(server, up=True)
    kept = server.home / ".edgec" / "bundles" / f".partial-{bundle.bundle_id}" / "model.onnx"
    assert kept.stat().st_size >= 300_000  # the dead link could not remove it, and nothing else did
    with connect(server.device(client_key, "d1").ssh_target(), ssh_opts) as conn:
        report = push_bundle(conn, bundle)
        assert report.continued_partial and report.resumes == 0
        assert report.resumed_at and report.resumed_at[0] >= 300_000
        total = sum(m["size"] for m in bundle.manifest["files"].values())
        assert report.bytes_sent <= total - 300_000 + 10_000  # only what the device lacked (+ the manifest)
        assert store_listing(conn) == [bundle.bundle_id]
        assert bundle_runs_on_device(conn, report.remote_dir)


def test_a_link_that_stays_down_fails_after_the_resume_attempts(netns_farm, client_key, ssh_opts, bundles):
    server = netns_farm.add(1)
    trust(server, ssh_opts)
    with connect(server.device(client_key, "d1").ssh_target(), ssh_opts) as conn:
        netns_farm.rate_limit(server, "8mbit")

        def outage(sent, _total):
            if sent > 200_000:
                netns_farm.link(server, up=False)

        start = time.monotonic()
        with pytest.raises(TransferError, match=r"d1 .*stalled .*reconnecting to resume failed: .*cannot connect"):
            push_bundle(conn, bundles["big"], progress=outage)
        # Liveness, not speed: 3 s stall + 2 connect attempts of 5 s would be ~13 s; a push that kept retrying or
        # hung would never return.
        assert time.monotonic() - start < 120


def test_a_connection_closed_on_purpose_is_not_resumed(sshd, client_key, ssh_opts, bundles):
    """A farm deadline or Ctrl-C closes the connection from outside: that push must stop, not reconnect."""
    server = sshd()
    trust(server, ssh_opts)
    with connect(server.device(client_key, "d1").ssh_target(), ssh_opts) as conn:
        first_client = conn.client
        with pytest.raises(TransferError, match=r"broke off"):
            push_bundle(conn, bundles["big"], progress=lambda sent, _: sent > 200_000 and conn.close())
        assert conn.closed and not conn.alive and conn.client is first_client  # no new connection was made


def test_full_disk_is_refused_up_front_naming_device_and_space(netns_farm, client_key, ssh_opts, bundles):
    server = netns_farm.add(1, disk_mb=1)
    trust(server, ssh_opts)
    with connect(server.device(client_key, "tiny-disk").ssh_target(), ssh_opts) as conn:
        with pytest.raises(TransferError, match=r"tiny-disk .*not enough disk space .*need 1\.\d MB, [01]\.\d MB free"):
            push_bundle(conn, bundles["big"])
        assert store_listing(conn) == []


def test_disk_filling_up_during_upload_removes_the_partial_files(netns_farm, client_key, ssh_opts, bundles,
                                                                 monkeypatch):
    server = netns_farm.add(1, disk_mb=1)
    trust(server, ssh_opts)
    real_free = push_module._free_bytes
    calls = []

    def free_lies_once(conn, directory, setup="", **kw):
        calls.append(directory)  # the up-front check sees plenty; the disk fills while writing
        real = real_free(conn, directory, setup, **kw)
        return 10**9 if len(calls) == 1 else real

    monkeypatch.setattr(push_module, "_free_bytes", free_lies_once)
    with connect(server.device(client_key, "tiny-disk").ssh_target(), ssh_opts) as conn:
        with pytest.raises(TransferError, match=r"tiny-disk .*not enough disk space .*need"):
            push_bundle(conn, bundles["big"])
        assert store_listing(conn) == []  # the partial upload is gone
        assert int(conn.run(f"du -sk {server.home}").stdout.split()[0]) < 100


def test_push_survives_20_percent_packet_loss(netns_farm, client_key, ssh_opts, bundles):
    server = netns_farm.add(1)
    trust(server, ssh_opts)
    netns_farm.packet_loss(server, 20)
    opts = type(ssh_opts)(**{**ssh_opts.__dict__, "stall_timeout": 15, "connect_timeout": 15, "retries": 3})
    with connect(server.device(client_key, "lossy").ssh_target(), opts) as conn:
        report = push_bundle(conn, bundles["big"])
        assert bundle_runs_on_device(conn, report.remote_dir)
    assert netns_farm.dropped_packets(server) > 20  # the loss was real


def test_push_over_a_slow_link_reports_progress(netns_farm, client_key, ssh_opts, bundles):
    server = netns_farm.add(1)
    trust(server, ssh_opts)
    netns_farm.rate_limit(server, "16mbit")
    seen = []
    with connect(server.device(client_key, "slow").ssh_target(), ssh_opts) as conn:
        report = push_bundle(conn, bundles["big"], progress=lambda sent, total: seen.append((sent, total)))
        assert bundle_runs_on_device(conn, report.remote_dir)
    assert len(seen) > 10 and seen == sorted(seen)
    assert seen[-1][0] == seen[-1][1] == report.bytes_sent


def test_ctrl_c_keeps_the_partial_upload_for_the_next_push(sshd, client_key, ssh_opts, bundles):
    server = sshd()
    trust(server, ssh_opts)
    bundle = bundles["big"]

    def interrupt(sent, _total):
        if sent > 400_000:
            raise KeyboardInterrupt

    with connect(server.device(client_key, "d1").ssh_target(), ssh_opts) as conn:
        with pytest.raises(KeyboardInterrupt):
            push_bundle(conn, bundle, progress=interrupt)
        assert store_listing(conn) == [f".partial-{bundle.bundle_id}"]
        report = push_bundle(conn, bundle)
        assert report.continued_partial and report.resumed_at[0] > 0
        assert store_listing(conn) == [bundle.bundle_id] and bundle_runs_on_device(conn, report.remote_dir)
