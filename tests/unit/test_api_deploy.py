"""``edgec.api``'s deploy entry points before any device is contacted: which devices, which options, and the
typed status round (the SSH paths are exercised in tests/farm/test_cli_deploy.py)."""

from __future__ import annotations

import pytest

from edgec import api
from edgec.errors import UsageError

pytestmark = pytest.mark.unit

INVENTORY = """
[[device]]
name = "pi-1"
host = "10.0.0.5"
tags = ["lab", "rpi4"]

[[device]]
name = "pi-2"
host = "10.0.0.6"
tags = ["lab"]
"""


def test_devices_are_named_or_tagged_never_both_nor_neither(tmp_path):
    inventory = tmp_path / "devices.toml"
    inventory.write_text(INVENTORY)
    assert [d.name for d in api.deploy_targets(tags=("lab",), inventory=inventory)] == ["pi-1", "pi-2"]
    assert [d.name for d in api.deploy_targets(("pi-2",), inventory=inventory)] == ["pi-2"]
    assert api.deploy_targets(("pi@10.1.1.1:2222",), inventory=inventory)[0].port == 2222
    with pytest.raises(UsageError, match="give --device or --tag, not both"):
        api.deploy_targets(("pi-1",), ("lab",), inventory)
    with pytest.raises(UsageError, match="give --device NAME"):
        api.deploy_targets((), (), inventory)


def test_bad_serve_options_are_refused_before_any_device_is_resolved(tmp_path):
    with pytest.raises(UsageError, match=r"--host 0\.0\.0\.0: a service reachable from the network needs --token-file"):
        api.deploy_bundle(tmp_path / "no.bundle", ("nowhere-in-any-inventory",), host="0.0.0.0")
    with pytest.raises(UsageError, match="--service 'upstart': choose pidfile or systemd"):
        api.deploy_bundle(tmp_path / "no.bundle", ("nowhere",), service="upstart")


def test_a_status_round_names_the_unreachable_devices():
    status = api.FarmStatus([{"device": "a", "drift": ["latency"]}, {"device": "b", "drift": ["unreachable"],
                                                                     "error": {"message": "timed out"}}])
    assert status.unreachable == ["b"] and status.to_dict() is status.samples
    assert api.FarmStatus([]).unreachable == []
