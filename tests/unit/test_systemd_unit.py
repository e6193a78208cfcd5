"""The systemd unit of ``edgec deploy --service systemd``: checked by systemd's own parser (``systemd-analyze
verify``), and its install script run by a real shell (systemctl is a recorder here: no systemd manager runs on
this machine, PID 1 is not systemd; tests/farm/test_service_systemd.py runs the whole deploy over SSH)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from edgec.deploy.systemd import UNIT_NAME, install_script, systemd_quote, unit_text
from edgec.errors import UsageError

pytestmark = pytest.mark.unit

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze missing (scripts/install-system.sh)")


def _verify(unit_dir) -> subprocess.CompletedProcess:
    return subprocess.run([ANALYZE, "verify", "--man=no", str(unit_dir / UNIT_NAME)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})


def _agent_argv(tmp_path, name: str) -> list[str]:
    agent = tmp_path / name
    agent.mkdir(parents=True)
    (agent / "edgec-agent-0123456789abcdef.pyz").write_bytes(b"")
    return [sys.executable, str(agent / "edgec-agent-0123456789abcdef.pyz"), "run", "--edgec-dir",
            str(tmp_path / "home 50%" / ".edgec"), "--host", "127.0.0.1", "--port", "8750"]


@needs_analyze
def test_the_unit_passes_systemd_analyze_verify_without_a_warning(tmp_path):
    argv = _agent_argv(tmp_path, "dir with space, 'quotes', \"double\", back\\slash, $HOME and %h")
    (tmp_path / UNIT_NAME).write_text(unit_text(argv))
    done = _verify(tmp_path)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


@needs_analyze
def test_systemd_reads_the_quoted_executable_back_exactly(tmp_path):
    """verify names the executable it could not find as systemd parsed it: the path must come back unchanged
    (an unescaped % would be a specifier, an unquoted space two words; systemd expands no $ there)."""
    missing = str(tmp_path / "no such dir" / "py%h $USER, 50%")
    (tmp_path / UNIT_NAME).write_text(unit_text([missing, "run"]))
    done = _verify(tmp_path)
    assert done.returncode != 0
    assert f"Command {missing} is not executable" in done.stderr, done.stderr


def test_a_path_systemd_cannot_hold_is_refused_not_written_into_the_unit():
    with pytest.raises(UsageError, match="control character"):
        unit_text(["/usr/bin/python3", "/home/pi/agent.pyz\nExecStartPre=/bin/rm -rf /"])
    with pytest.raises(UsageError, match="quotes and backslashes in the executable"):
        unit_text(["/home/pi/it's/python3", "agent.pyz"])  # systemd: "Executable name contains special characters"
    assert systemd_quote("/usr/bin/python3", executable=True) == "/usr/bin/python3"
    assert systemd_quote("a $b %c") == '"a $$b %%c"'


def test_the_install_script_replaces_the_unit_atomically_then_reloads_enables_restarts(tmp_path):
    """A user unit ($HOME/.config/systemd/user), with systemctl a recorder on PATH; an older unit is there."""
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    units = home / ".config" / "systemd" / "user"
    units.mkdir(parents=True)
    (units / UNIT_NAME).write_text("old unit\n")
    bin_dir.mkdir()
    log = tmp_path / "calls.jsonl"
    shim = bin_dir / "systemctl"
    shim.write_text(f"#!{sys.executable}\nimport json, os, sys\nunit = os.path.expanduser('~/.config/systemd/user/"
                    f"{UNIT_NAME}')\nwith open({str(log)!r}, 'a') as h:\n    h.write(json.dumps([sys.argv[1:], "
                    "open(unit).read(), sorted(os.listdir(os.path.dirname(unit)))]) + '\\n')\n")
    shim.chmod(0o755)
    unit = unit_text(_agent_argv(tmp_path, "agent"))
    env = {"HOME": str(home), "PATH": f"{bin_dir}:/usr/bin:/bin"}
    done = subprocess.run(["sh", "-c", install_script(unit, root=False)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c[0] for c in calls] == [["--user", "daemon-reload"], ["--user", "enable", "edgec-serve"],
                                     ["--user", "restart", "edgec-serve"]]
    assert all(c[1] == unit and c[2] == [UNIT_NAME] for c in calls)  # complete from the first call; no temp left
    failing = subprocess.run(["sh", "-c", install_script("new unit\n", root=False)], capture_output=True, text=True,
                             env={**env, "PATH": "/nonexistent:/usr/bin:/bin"}, timeout=60)
    assert failing.returncode != 0 and os.listdir(units) == [UNIT_NAME]  # no systemctl: an error, no temp file
