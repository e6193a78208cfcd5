"""edgec farm prune against a real sshd device: which bundles, partial uploads and agents go, and which stay."""

from __future__ import annotations

import time

from farm_testbed import trust

from edgec.deploy.farm import prune_devices
from edgec.deploy.prune import prune_device
from edgec.deploy.push import install_agent, push_bundle
from edgec.deploy.remote import agent_zipapp
from edgec.deploy.ssh import connect

DAY = 86400


def age(conn, path: str, days: float) -> None:
    conn.run(f"touch -d @{int(time.time() - days * DAY)} {path}")


def store(server) -> list[str]:
    return sorted(p.name for p in (server.home / ".edgec" / "bundles").iterdir())


def test_prune_keeps_the_most_recently_used_bundles_and_drops_stale_leftovers(sshd, client_key, ssh_opts, bundles):
    server = sshd()
    trust(server, ssh_opts)
    small, small2, big = bundles["small"], bundles["small2"], bundles["big"]
    agent = agent_zipapp()
    with connect(server.device(client_key, "d1").ssh_target(), ssh_opts) as conn:
        for bundle in (small, small2, big):
            push_bundle(conn, bundle)
        install_agent(conn, agent)
        b = f"{server.home}/.edgec/bundles"
        age(conn, f"{b}/{big.bundle_id}", 10)
        age(conn, f"{b}/{small.bundle_id}", 5)
        conn.run(f"mkdir -p {b}/.partial-old {b}/.partial-new && touch {server.home}/.edgec/agent/edgec-agent-0.pyz")
        age(conn, f"{b}/.partial-old", 2)
        dry = prune_device(conn, keep=1, current_agent=agent.name, dry_run=True)
        assert sorted(dry.removed) == sorted([big.bundle_id, small.bundle_id, ".partial-old", "edgec-agent-0.pyz"])
        assert dry.kept == [small2.bundle_id] and dry.freed_bytes > big.model_path.stat().st_size
        assert len(store(server)) == 5  # a dry run removes nothing
        # Only bundles unused for a week: the 5-day-old one stays.
        week = prune_device(conn, keep=1, older_than_days=7, current_agent=agent.name)
        assert big.bundle_id in week.removed and small.bundle_id in week.kept
        assert store(server) == sorted([".partial-new", small.bundle_id, small2.bundle_id])
        assert sorted(p.name for p in (server.home / ".edgec" / "agent").iterdir()) == [agent.name]
        # Pushing a bundle that is there marks it used: now it is the one kept (small2 was pushed a day ago).
        age(conn, f"{b}/{small2.bundle_id}", 1)
        again = push_bundle(conn, small)
        assert again.already_there and again.bytes_sent == 0
        assert prune_device(conn, keep=1).removed == [small2.bundle_id]
        assert store(server) == sorted([".partial-new", small.bundle_id])
        assert prune_device(conn, keep=0).removed == [small.bundle_id]
        # The live bundle and its rollback targets stay whatever --keep says.
        for bundle in (small, small2, big):
            push_bundle(conn, bundle)
        edgec_dir = server.home / ".edgec"
        (edgec_dir / "active").symlink_to(f"bundles/{big.bundle_id}")
        (edgec_dir / "activations.json").write_text(f'[{{"bundle_id": "{small.bundle_id}", "at": 1}}]')
        assert prune_device(conn, keep=0).removed == [small2.bundle_id]
        assert store(server) == sorted([".partial-new", small.bundle_id, big.bundle_id])


def test_prune_devices_reports_each_device_or_its_error(sshd, client_key, ssh_opts, bundles):
    good, unknown = sshd("good"), sshd("unknown")
    trust(good, ssh_opts)  # the other host key is not trusted
    with connect(good.device(client_key, "good").ssh_target(), ssh_opts) as conn:
        push_bundle(conn, bundles["small"])
    rows = prune_devices([good.device(client_key, "good"), unknown.device(client_key, "unknown")], ssh_opts, keep=0)
    assert rows[0]["ok"] and rows[0]["removed"] == [bundles["small"].bundle_id]
    assert not rows[1]["ok"] and rows[1]["error"]["type"] == "HostKeyError"


def test_a_newline_in_an_entry_name_cannot_forge_an_entry(sshd, client_key, ssh_opts, bundles):
    """A name holding "\\n<mtime> <kib> .." once parsed as a second entry ".." (the store's parent, ~/.edgec,
    for ``rm -rf``) and broke the listing. Entries are NUL-terminated now: the odd one is an entry like any other."""
    server = sshd()
    trust(server, ssh_opts)
    with connect(server.device(client_key, "d1").ssh_target(), ssh_opts) as conn:
        push_bundle(conn, bundles["small"])
        store_dir = server.home / ".edgec" / "bundles"
        (server.home / ".edgec" / "keep.txt").write_text("do not delete")
        (store_dir / "odd\n0 4 ..").mkdir()
        age(conn, f"{store_dir}/{bundles['small'].bundle_id}", 1)
        report = prune_device(conn, keep=1)
    assert report.kept == ["odd\n0 4 .."] and report.removed == [bundles["small"].bundle_id]
    assert (server.home / ".edgec" / "keep.txt").read_text() == "do not delete"
