"""``edgec deploy``, ``edgec farm status``, ``edgec rollback`` and the report's live section, as a user runs them."""

from __future__ import annotations

import json

from farm_testbed import edgec, inventory
from serve_testbed import active_id, stop_services


def test_deploy_status_rollback_and_the_live_report(sshd, home, bundles, device_python):
    server = sshd("pi")
    inventory(home, [("pi", server, device_python)])
    old, new = (str(bundles[k].path) for k in ("small", "small2"))
    common = ("--trust-new-host", "--port", "0")
    try:
        first = edgec(home, "deploy", old, "--device", "pi", *common, "--json")
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["devices"][0]["status"] == "ok"
        second = edgec(home, "deploy", new, "--tag", "lab", *common)
        assert second.returncode == 0, second.stderr
        assert "pi" in second.stdout and " ok " in second.stdout
        status = edgec(home, "farm", "status", "--json")
        assert status.returncode == 0, status.stderr
        [row] = json.loads(status.stdout)
        assert row["bundle_id"] == row["active"] == bundles["small2"].bundle_id
        assert row["power_source"] == "none" and row["uptime_s"] > 0  # this machine has no power sensor
        table = edgec(home, "farm", "status")
        assert "p99 ms" in table.stdout and bundles["small2"].bundle_id[:16] in table.stdout
        back = edgec(home, "rollback", "--device", "pi")
        assert back.returncode == 0, back.stderr
        assert active_id(server.home) == bundles["small"].bundle_id
        assert edgec(home, "farm", "status", "--json").returncode == 0
        report = edgec(home, "report", "-o", "report.html")
        assert report.returncode == 0, report.stderr
        page = (home / "report.html").read_text()
        assert "Live: the inference services over time" in page and 'alt="live latency on pi"' in page
        assert page.count("<td>rollback</td>") == 1 and page.count("<td>deploy</td>") == 2
        bad = edgec(home, "deploy", old, "--device", "pi", "--tag", "lab")
        assert bad.returncode == 2 and "give --device or --tag, not both" in bad.stderr
        exposed = edgec(home, "deploy", old, "--device", "pi", "--host", "0.0.0.0")
        assert exposed.returncode == 2 and "needs --token-file" in exposed.stderr
        canary = edgec(home, "deploy", old, "--tag", "lab", "--canary", "1", *common)
        assert canary.returncode == 2 and "has no benchmark in the results database" in canary.stderr
        assert canary.stderr.startswith("edgec: error: --canary: bundle") and "Traceback" not in canary.stderr
    finally:
        stop_services([server.home])
