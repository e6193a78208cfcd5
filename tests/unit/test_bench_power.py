"""``--power estimated`` takes the device profile's power model in one place (``with_power_model``), so the
command line, ``api.bench``, sweeps and the demo agree."""

from __future__ import annotations

import pytest

from edgec.deploy.bench import with_power_model
from edgec.device_agent.options import BenchOptions
from edgec.device_agent.power import AUTO_ORDER
from edgec.errors import UsageError
from edgec.targets import power_model

pytestmark = pytest.mark.unit


@pytest.fixture
def inventory(tmp_path):
    path = tmp_path / "devices.toml"
    path.write_text('[[device]]\nname = "pi"\nhost = "10.0.0.2"\ntarget = "rpi4"\n\n'
                    '[[device]]\nname = "bare"\nhost = "10.0.0.3"\n')
    return str(path)


def test_estimated_takes_the_model_of_the_devices_profile(inventory):
    rpi4 = power_model("rpi4")
    assert rpi4 is not None  # the built-in profile carries one
    assert with_power_model(BenchOptions(power="estimated"), "pi", inventory).power_model == rpi4
    assert with_power_model(BenchOptions(power="hwmon,estimated"), "pi", inventory).power_model == rpi4
    given = BenchOptions(power="estimated", power_model=(1.0, 2.0))
    assert with_power_model(given, "pi", inventory) is given  # a model the user gave wins
    plain = BenchOptions(power="auto")
    assert with_power_model(plain, "pi", inventory) is plain  # auto never becomes an estimate on its own


def test_a_device_without_a_profile_is_told_to_give_a_model(inventory):
    with pytest.raises(UsageError, match="device 'bare' has no target profile in the inventory; give --power-model"):
        with_power_model(BenchOptions(power="estimated"), "bare", inventory)
    fallback = with_power_model(BenchOptions(power="estimated"), "bare", inventory, fallback_profile="rpi4")
    assert fallback.power_model == power_model("rpi4")


def test_sweeps_estimate_after_the_sensors_when_asked_for_auto(inventory):
    options = with_power_model(BenchOptions(power="auto"), "pi", inventory, estimate_when_auto=True)
    assert options.power == ",".join([*AUTO_ORDER, "estimated"]) and options.power_model == power_model("rpi4")
    assert "pmic" in options.power  # the one order (the demo's own copy once dropped pmic)


def test_local_and_ssh_runners_are_the_one_agent_runner_protocol(tmp_path, monkeypatch, inventory):
    from edgec.deploy.bench import open_agent
    from edgec.deploy.local import LocalAgent
    from edgec.deploy.remote import SshAgent
    from edgec.device_agent.client import AgentRunner

    monkeypatch.setenv("EDGEC_HOME", str(tmp_path / "home"))
    local, remote = open_agent("local"), open_agent("pi", inventory)  # nothing connects before `with`
    assert isinstance(local, LocalAgent) and isinstance(remote, SshAgent)
    assert isinstance(local, AgentRunner) and isinstance(remote, AgentRunner)
    assert (local.name, local.target) == ("local", None) and (remote.name, remote.target) == ("pi", "rpi4")
    assert (tmp_path / "home" / "agent").is_dir()  # the local agent zipapp is built under $EDGEC_HOME/agent
