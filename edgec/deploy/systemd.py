"""``edgec deploy --service systemd``: the inference service as a systemd unit on the device.

The unit runs ``agent run`` in the foreground (``systemctl stop`` sends SIGTERM, which drains and exits
cleanly; ``Restart=on-failure`` brings back a crashed service). It is a system unit when edgec logs in as root,
else a user unit (``loginctl enable-linger USER`` keeps it running after logout). The file is written to a
temporary name beside its place and renamed over it (rename(2) is atomic: systemd never reads half a unit), then
``daemon-reload``, ``enable`` and ``restart``.

ExecStart follows systemd's own rules, not the shell's: ``%`` starts a specifier and ``$`` a variable (except in
the executable's path), so both are doubled; an argument with spaces, quotes or backslashes is double-quoted
with C escapes; the executable's path may hold none of quotes and backslashes. A control character in
a path (the inventory's ``python``, the device's home) would end the line and add directives: refused.
"""

from __future__ import annotations

import re
import shlex

from edgec.errors import DeviceError, UsageError

__all__ = ["UNIT_NAME", "install_script", "systemd_quote", "unit_path", "unit_text"]

UNIT_NAME = "edgec-serve.service"
_PLAIN = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


def systemd_quote(arg: str, executable: bool = False) -> str:
    """``arg`` as one word of a unit's command line, read back by systemd as exactly ``arg``. The executable (the
    first word) gets no ``$`` expansion and may not hold quotes or backslashes at all (measured with systemd 252's
    ``systemd-analyze verify``: "Executable name contains special characters")."""
    if any(ord(c) < 32 or ord(c) == 127 for c in arg):
        raise UsageError(f"{arg!r}: a control character cannot be written into a systemd unit; use a path "
                         "without one (--service pidfile does not need this)")
    if executable and any(c in arg for c in "\\'\""):
        raise UsageError(f"{arg!r}: systemd refuses quotes and backslashes in the executable's path; use "
                         "another path (or --service pidfile)")
    word = arg.replace("%", "%%") if executable else arg.replace("%", "%%").replace("$", "$$")
    if _PLAIN.fullmatch(arg):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_text(argv: list[str], description: str = "edgec inference service") -> str:
    """The unit running ``argv`` (the agent's ``run`` command line)."""
    command = " ".join(systemd_quote(a, executable=k == 0) for k, a in enumerate(argv))
    return ("[Unit]\n"
            f"Description={description}\n"
            "After=network-online.target\n"
            "Wants=network-online.target\n\n"
            "[Service]\n"
            f"ExecStart={command}\n"
            "Restart=on-failure\n"
            "RestartSec=2\n"
            "KillSignal=SIGTERM\n"
            "TimeoutStopSec=30\n\n"
            "[Install]\n"
            "WantedBy=default.target\n")


def unit_path(root: bool) -> str:
    """Where the unit goes: a shell word (``$HOME`` expands on the device for a user unit)."""
    return f"/etc/systemd/system/{UNIT_NAME}" if root else f"\"$HOME\"/.config/systemd/user/{UNIT_NAME}"


def install_script(unit: str, root: bool) -> str:
    """A POSIX shell script for the device: write ``unit`` atomically, reload, enable and (re)start it."""
    path = unit_path(root)
    ctl = "systemctl" if root else "systemctl --user"
    name = UNIT_NAME.rsplit(".", 1)[0]
    return (f"set -e\nunit={path}\nmkdir -p \"$(dirname \"$unit\")\"\ntmp=\"$unit.tmp.$$\"\n"
            f"trap 'rm -f \"$tmp\"' EXIT\nprintf '%s' {shlex.quote(unit)} > \"$tmp\"\n"
            f"mv -f \"$tmp\" \"$unit\"\n{ctl} daemon-reload\n{ctl} enable {name}\n{ctl} restart {name}\n")


def install_unit(conn, argv: list[str]) -> str:
    """Install and start the unit over ``conn`` (an open ``edgec.deploy.ssh.Connection``); its path there."""
    root = conn.run("id -u", timeout=30, what="id").stdout.strip() == "0"
    result = conn.run(install_script(unit_text(argv), root), timeout=120, what="systemctl")
    if result.exit_code != 0:
        raise DeviceError(f"{conn.target.label}: installing the systemd unit failed (exit {result.exit_code}: "
                          f"{(result.stderr or result.stdout).strip()[-200:]}); use --service pidfile on boards "
                          "without systemd")
    return unit_path(root)
