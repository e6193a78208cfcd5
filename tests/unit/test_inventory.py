"""Inventory files and --device specs: valid files load, bad ones name the file and the key."""

from __future__ import annotations

import pytest

from edgec.deploy.inventory import Device, load_inventory, resolve_device, select_devices
from edgec.errors import InputError, UsageError

pytestmark = pytest.mark.unit

GOOD = """
[[device]]
name = "pi-1"
host = "10.0.0.5"
port = 2222
user = "pi"
key = "keys/pi"
target = "rpi4"
tags = ["rpi4", "lab"]
python = "/home/pi/venv/bin/python"

[[device]]
name = "jetson"
host = "jetson.local"
tags = ["jetson"]
"""


def test_good_inventory_loads_with_defaults_and_key_relative_to_the_file(tmp_path):
    path = tmp_path / "devices.toml"
    path.write_text(GOOD)
    pi, jetson = load_inventory(path)
    assert pi == Device("pi-1", "10.0.0.5", 2222, "pi", str(tmp_path / "keys/pi"), "rpi4", ("rpi4", "lab"),
                        "/home/pi/venv/bin/python")
    assert (jetson.port, jetson.user, jetson.python) == (None, None, "python3")
    assert [d.name for d in select_devices([pi, jetson], ("lab",))] == ["pi-1"]
    with pytest.raises(UsageError, match="no device in the inventory has tags nope"):
        select_devices([pi, jetson], ("nope",))


@pytest.mark.parametrize("body, message", [
    ('[[device]]\nname = "a"\nhost = "h"\nprot = 22\n', r"device #1 \('a'\): unknown key 'prot'"),
    ('[[device]]\nname = "a"\n', r"device #1 \('a'\): missing key 'host'"),
    ('[[device]]\nname = "a"\nhost = "h"\nport = "22"\n', r"device #1 \('a'\): key 'port' must be a int"),
    ('[[device]]\nname = "a"\nhost = "h"\nport = 70000\n', r"key 'port' must be 1-65535"),
    ('[[device]]\nname = "a"\nhost = "h"\ntags = [1]\n', r"key 'tags' must be a list of strings"),
    ('[[device]]\nname = "a"\nhost = "h"\n[[device]]\nname = "a"\nhost = "i"\n', r"name 'a' is used twice"),
    ('[device]\nname = "a"\n', r"'device' must be an array of tables"),
    ('[[devices]]\nname = "a"\n', r"unknown top-level key 'devices'"),
    ('[[device]\n', r"not valid TOML"),
])
def test_bad_inventory_names_file_and_key(tmp_path, body, message):
    path = tmp_path / "inv.toml"
    path.write_text(body)
    with pytest.raises(InputError, match=rf"inv.toml: .*{message}|inv.toml: {message}"):
        load_inventory(path)


def test_default_inventory_lookup_and_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGEC_HOME", str(tmp_path / "home"))
    with pytest.raises(InputError, match=r"no inventory: create \./devices\.toml"):
        load_inventory()
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "devices.toml").write_text(GOOD)
    assert [d.name for d in load_inventory()] == ["pi-1", "jetson"]
    (tmp_path / "devices.toml").write_text('[[device]]\nname = "here"\nhost = "h"\n')
    assert [d.name for d in load_inventory()] == ["here"]  # ./devices.toml wins


def test_device_specs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGEC_HOME", str(tmp_path / "none"))
    assert resolve_device("pi@raspberrypi.local:2222") == Device("pi@raspberrypi.local:2222", "raspberrypi.local",
                                                                 2222, "pi")
    assert resolve_device("root@[::1]:22").host == "::1"
    assert resolve_device("board").host == "board"  # no inventory: a host name or ~/.ssh/config alias
    inv = tmp_path / "inv.toml"
    inv.write_text(GOOD)
    assert resolve_device("pi-1", inv).port == 2222
    with pytest.raises(UsageError, match=r"--device 'pi-9': no such device in .*inv.toml; known: pi-1, jetson"):
        resolve_device("pi-9", inv)
    with pytest.raises(UsageError, match="port must be 1-65535"):
        resolve_device("a@b:99999")


def test_a_profile_file_target_is_relative_to_the_inventory(tmp_path):
    path = tmp_path / "devices.toml"
    path.write_text('[[device]]\nname = "x"\nhost = "h"\ntarget = "profiles/board.toml"\n'
                    '[[device]]\nname = "y"\nhost = "h"\ntarget = "rpi5"\n')
    x, y = load_inventory(path)
    assert (x.target, y.target) == (str(tmp_path / "profiles/board.toml"), "rpi5")
