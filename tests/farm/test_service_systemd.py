"""``edgec deploy --service systemd`` over SSH to a loopback device.

No systemd manager can run on this machine: PID 1 is the VM's init, not systemd, and booting systemd in a
namespace of this shared root would run its boot units (systemd-tmpfiles would clean /tmp, for one). So the
device's ``/usr/bin/systemctl`` is a stand-in, bind-mounted in the device's own mount namespace together with a
test directory over ``/etc/systemd/system``: ``daemon-reload`` runs the real ``systemd-analyze verify`` on the unit
(any warning fails it), ``enable`` makes the wants link, ``restart`` starts the unit's ExecStart detached, split
by systemd's quoting rules (double quotes, ``%%``/``$$``). What this leaves untested: a real manager's
supervision (Restart=on-failure, stop on SIGTERM) and user units with lingering.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from farm_testbed import edgec, inventory
from serve_testbed import active_id, serve_state, stop_services

from edgec.deploy.systemd import UNIT_NAME, unit_text

pytestmark = pytest.mark.skipif(not (shutil.which("systemd-analyze") and os.path.exists("/usr/bin/systemctl")),
                                reason="needs systemd-analyze and /usr/bin/systemctl to cover (scripts/install-system.sh)")

SYSTEMCTL = r'''#!{python}
import json, os, shlex, signal, subprocess, sys, time
UNITS, LOG, PIDFILE = "/etc/systemd/system", {log!r}, {pidfile!r}
args = sys.argv[1:]
args = args[1:] if args[:1] == ["--user"] else args
unit = os.path.join(UNITS, args[-1] + ".service" if len(args) > 1 else {unit!r})
with open(LOG, "a") as log:
    log.write(json.dumps({{"args": args, "units": sorted(os.listdir(UNITS))}}) + "\n")
if args == ["daemon-reload"]:
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", unit], capture_output=True, text=True)
    if done.returncode or done.stderr.strip():
        sys.exit("daemon-reload: " + done.stderr)
elif args[0] == "enable":
    wants = os.path.join(UNITS, "default.target.wants")
    os.makedirs(wants, exist_ok=True)
    if not os.path.islink(os.path.join(wants, os.path.basename(unit))):
        os.symlink(unit, os.path.join(wants, os.path.basename(unit)))
elif args[0] == "restart":
    try:
        old = int(open(PIDFILE).read())
        os.kill(old, signal.SIGTERM)
        while os.path.exists(f"/proc/{{old}}"):
            time.sleep(0.05)
    except (OSError, ValueError):
        pass
    line = next(l for l in open(unit) if l.startswith("ExecStart="))[len("ExecStart="):]
    words = shlex.split(line)
    argv = [words[0].replace("%%", "%")] + [w.replace("%%", "%").replace("$$", "$") for w in words[1:]]
    with open(LOG + ".service", "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    open(PIDFILE, "w").write(str(proc.pid))
else:
    sys.exit("systemctl stand-in: " + " ".join(args) + " is not supported")
'''


def test_deploy_with_service_systemd_installs_a_verified_unit_that_serves(sshd, home, bundles, device_python,
                                                                         tmp_path):
    units, log, pidfile = tmp_path / "units", tmp_path / "systemctl.log", tmp_path / "systemctl.pid"
    units.mkdir()
    shim = tmp_path / "systemctl"
    shim.write_text(SYSTEMCTL.format(python=sys.executable, log=str(log), pidfile=str(pidfile), unit=UNIT_NAME))
    shim.chmod(0o755)
    server = sshd("pi", setup=f"mount --bind {units} /etc/systemd/system && mount --bind {shim} /usr/bin/systemctl && ")
    inventory(home, [("pi", server, device_python)])
    try:
        first = edgec(home, "deploy", str(bundles["small"].path), "--device", "pi", "--trust-new-host", "--port", "0",
                      "--service", "systemd", "--json")
        assert first.returncode == 0, first.stderr + first.stdout
        assert json.loads(first.stdout)["devices"][0]["status"] == "ok"
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        assert [c["args"] for c in calls] == [["daemon-reload"], ["enable", "edgec-serve"], ["restart", "edgec-serve"]]
        assert all(c["units"] in ([UNIT_NAME], ["default.target.wants", UNIT_NAME]) for c in calls)  # no temp file
        [agent] = (server.home / ".edgec" / "agent").glob("edgec-agent-*.pyz")
        argv = [device_python, str(agent), "run", "--edgec-dir", str(server.home / ".edgec"), "--host", "127.0.0.1",
                "--port", "0"]
        assert (units / UNIT_NAME).read_text() == unit_text(argv)
        assert os.path.islink(units / "default.target.wants" / UNIT_NAME)
        assert serve_state(server.home)["pid"] == int(pidfile.read_text())  # the unit's process is the service

        second = edgec(home, "deploy", str(bundles["small2"].path), "--device", "pi", "--port", "0",
                       "--service", "systemd")
        assert second.returncode == 0, second.stderr + second.stdout
        assert active_id(server.home) == bundles["small2"].bundle_id
        assert len(log.read_text().splitlines()) == 3  # the running unit hot-swapped: no second restart
        assert serve_state(server.home)["pid"] == int(pidfile.read_text())
    finally:
        stop_services([server.home])
    assert not Path("/etc/systemd/system", UNIT_NAME).exists()  # the device's mounts never reached this machine
