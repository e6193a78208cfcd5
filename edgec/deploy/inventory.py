"""The device inventory: a TOML file with one ``[[device]]`` table per device.

::

    [[device]]
    name = "pi-kitchen"          # unique; what --device NAME and the results store use
    host = "192.168.1.40"        # or a Host alias from ~/.ssh/config
    port = 22                    # optional (default: ~/.ssh/config, then 22)
    user = "pi"                  # optional (default: ~/.ssh/config, then the local user)
    key = "~/.ssh/id_ed25519"    # optional private key; relative paths are relative to this file
    target = "rpi4"              # optional profile name or .toml file (relative to this file), stored with results
    tags = ["rpi4", "lab"]       # optional, selects devices with --tag
    python = "python3"           # optional interpreter that runs the agent (e.g. a virtualenv's)
    site = "lab-b"               # optional: with --cluster, only a Ray node started with the resource
                                 # {"site:lab-b": 1} reaches this device

Chosen with ``--inventory PATH``; otherwise ``./devices.toml``, then ``$EDGEC_HOME/devices.toml``
(``~/.edgec/devices.toml``). Errors name the file and the key at fault.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from edgec.deploy.ssh_options import SshTarget
from edgec.errors import InputError, UsageError
from edgec.settings import edgec_home

__all__ = ["Device", "default_inventory_path", "load_inventory", "resolve_device", "select_devices"]

_KEYS = {"name": str, "host": str, "port": int, "user": str, "key": str, "target": str, "tags": list, "python": str,
         "site": str}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Device:
    """One device of the farm."""

    name: str
    host: str
    port: int | None = None
    user: str | None = None
    key: str | None = None
    target: str | None = None
    tags: tuple[str, ...] = ()
    python: str = "python3"
    site: str | None = None

    def ssh_target(self) -> SshTarget:
        return SshTarget(host=self.host, port=self.port, user=self.user, key=self.key, name=self.name)

    @property
    def address(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"


def default_inventory_path() -> Path | None:
    for path in (Path("devices.toml"), edgec_home() / "devices.toml"):
        if path.is_file():
            return path
    return None


def load_inventory(path: str | os.PathLike | None = None) -> list[Device]:
    """Read and validate an inventory file.

    Raises:
        InputError: the file is missing, not TOML, or a device table has a missing, unknown or mistyped key.
    """
    if path is None:
        path = default_inventory_path()
        if path is None:
            raise InputError(f"no inventory: create ./devices.toml or {edgec_home() / 'devices.toml'} "
                             "(one [[device]] table per device) or pass --inventory PATH")
    path = Path(path)
    data = _read_toml(path)
    extra = sorted(set(data) - {"device"})
    if extra:
        raise InputError(f"{path}: unknown top-level key {extra[0]!r}; only [[device]] tables are allowed")
    tables = data.get("device", [])
    if not isinstance(tables, list):
        raise InputError(f"{path}: 'device' must be an array of tables ([[device]]), not a single table")
    devices, seen = [], set()
    for index, table in enumerate(tables, 1):
        device = _device_from_table(table, f"{path}: device #{index}", path.parent)
        if device.name in seen:
            raise InputError(f"{path}: device #{index}: name {device.name!r} is used twice; names must be unique")
        seen.add(device.name)
        devices.append(device)
    return devices


def _read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise InputError(f"{path}: inventory not found; create it or pass another --inventory") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read inventory ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from None


def _device_from_table(table: dict, where: str, base: Path) -> Device:
    if isinstance(table.get("name"), str):
        where = f"{where} ({table['name']!r})"
    for key, value in table.items():
        if key not in _KEYS:
            raise InputError(f"{where}: unknown key {key!r}; known keys: {', '.join(_KEYS)}")
        if not isinstance(value, _KEYS[key]) or isinstance(value, bool):
            raise InputError(f"{where}: key {key!r} must be a {_KEYS[key].__name__}, not {value!r}")
    for key in ("name", "host"):
        if key not in table:
            raise InputError(f"{where}: missing key {key!r}")
    name = table["name"]
    if not _NAME.match(name):
        raise InputError(f"{where}: key 'name' must be letters, digits, '.', '_' or '-'")
    port = table.get("port")
    if port is not None and not 0 < port < 65536:
        raise InputError(f"{where}: key 'port' must be 1-65535, not {port}")
    tags = table.get("tags", [])
    if not all(isinstance(t, str) for t in tags):
        raise InputError(f"{where}: key 'tags' must be a list of strings")
    key = table.get("key")
    if key is not None:
        key = str(base / os.path.expanduser(key))  # an absolute key path stays as it is
    site = table.get("site")
    if site is not None and not _NAME.match(site):
        raise InputError(f"{where}: key 'site' must be letters, digits, '.', '_' or '-'")
    target = table.get("target")
    if target is not None and target.endswith(".toml"):
        target = str(base / os.path.expanduser(target))  # a profile file, like `key`, relative to this file
    return Device(name=name, host=table["host"], port=port, user=table.get("user"), key=key,
                  target=target, tags=tuple(tags), python=table.get("python", "python3"), site=site)


_SPEC = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:@\s\[\]]+))(?::(?P<port>\d+))?$")


def resolve_device(spec: str, inventory: str | os.PathLike | None = None) -> Device:
    """``NAME`` from the inventory, or ``user@host[:port]`` (IPv6 as ``[addr]:port``).

    A bare word is looked up in the inventory when one exists; otherwise it is taken as a host name.
    """
    if inventory is not None or default_inventory_path() is not None:
        devices = load_inventory(inventory)
        for device in devices:
            if device.name == spec:
                return device
        if inventory is not None and "@" not in spec and ":" not in spec and "." not in spec:
            known = ", ".join(d.name for d in devices) or "none"
            raise UsageError(f"--device {spec!r}: no such device in {inventory}; known: {known}")
    match = _SPEC.match(spec)
    if not match:
        raise UsageError(f"--device {spec!r}: expected user@host[:port] or a device name from the inventory")
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"--device {spec!r}: port must be 1-65535")
    host = match["v6"] or match["host"]
    return Device(name=spec, host=host, port=port, user=match["user"])


def select_devices(devices: list[Device], tags: tuple[str, ...] = (), names: tuple[str, ...] = ()) -> list[Device]:
    """Devices carrying every tag in ``tags`` (and named in ``names`` when given)."""
    known = {d.name for d in devices}
    for name in names:
        if name not in known:
            raise UsageError(f"--device {name!r}: not in the inventory; known: {', '.join(sorted(known))}")
    chosen = [d for d in devices if all(t in d.tags for t in tags) and (not names or d.name in names)]
    if not chosen:
        if tags:
            raise UsageError(f"no device in the inventory has tags {', '.join(tags)}")
        raise UsageError("the inventory lists no devices")
    return chosen
