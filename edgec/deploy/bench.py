"""Benchmark a bundle on one device through an ``AgentRunner``: the path ``edgec bench``, ``api.bench``, the farm,
sweeps and the demo share.

``open_agent`` turns ``--device local|user@host[:port]|NAME`` into a runner; ``run_bench`` places the bundle
and measures it; ``bench_device`` does both and stores the outcome (result or error) when given a store;
``with_power_model`` gives ``--power estimated`` the device's profile power model, the same for the CLI and
the API.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from edgec.bundle import Bundle
from edgec.deploy.inventory import resolve_device
from edgec.deploy.local import LocalAgent
from edgec.deploy.ssh_options import SshOptions
from edgec.device_agent.client import AgentRunner
from edgec.device_agent.options import BenchOptions
from edgec.device_agent.power import AUTO_ORDER
from edgec.errors import InputError, UsageError
from edgec.settings import HOST_PROFILE, LOCAL_DEVICE
from edgec.targets import power_model

__all__ = ["BenchRun", "bench_device", "device_profile", "open_agent", "run_bench", "with_power_model"]


@dataclass
class BenchRun:
    """One benchmark: the agent's BenchResult document, the device it ran on, what the push did (remote runs)
    and its row in the results store (when stored)."""

    result: dict
    device: str
    address: str | None = None
    target: str | None = None
    pushed_bytes: int | None = None
    push_resumes: int | None = None
    run_id: int | None = None

    def to_dict(self) -> dict:
        return {"device": self.device, "address": self.address, "target": self.target,
                "pushed_bytes": self.pushed_bytes, "push_resumes": self.push_resumes, "run_id": self.run_id,
                "result": self.result}


def open_agent(device: str, inventory=None, ssh: SshOptions | None = None, timeout: float = 600.0,
               quiet: bool = True, **hooks) -> AgentRunner:
    """A runner for ``local``, ``user@host[:port]`` or an inventory name; ``hooks`` are ``SshAgent``'s
    ``on_connect``/``on_stage``."""
    if device == LOCAL_DEVICE:
        return LocalAgent(quiet=quiet, timeout=max(timeout, 3600.0))
    from edgec.deploy.remote import SshAgent  # paramiko: only for a remote device

    return SshAgent(resolve_device(device, inventory), ssh, timeout, **hooks)


def run_bench(agent: AgentRunner, bundle: Bundle, options: BenchOptions) -> BenchRun:
    """Place ``bundle`` where ``agent`` runs (pushing it to a device) and benchmark it; never retried."""
    result = agent.bench(agent.place(bundle.path), options)
    push = agent.last_push
    target = agent.target if agent.name != LOCAL_DEVICE else bundle.manifest.get("target", {}).get("name")
    return BenchRun(result=result, device=agent.name, address=agent.address, target=target,
                    pushed_bytes=push.bytes_sent if push else None, push_resumes=push.resumes if push else None)


def bench_device(bundle: str | os.PathLike | Bundle, device: str, options: BenchOptions, *, inventory=None,
                 ssh: SshOptions | None = None, store=None, timeout: float = 600.0, quiet: bool = True) -> BenchRun:
    """Benchmark ``bundle`` on ``device``; the result, or the error, is recorded in ``store`` when given."""
    if not isinstance(bundle, Bundle) and not os.path.exists(bundle):
        raise InputError(f"{bundle}: no such bundle directory (make one with `edgec compile`)")
    opened = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
    agent = open_agent(device, inventory, ssh, timeout, quiet)
    try:
        with agent:
            run = run_bench(agent, opened, options)
    except Exception as exc:
        if store is not None:
            store.record(bundle_id=opened.bundle_id, device=agent.name, address=agent.address,
                         profile=agent.target, error=exc)
        raise
    if store is not None:
        run.run_id = store.record(bundle_id=opened.bundle_id, device=run.device, address=run.address,
                                  profile=run.target, result=run.result)
    return run


def device_profile(device: str, inventory=None) -> str | None:
    """The profile that describes ``device``: ``host`` for this machine, else the inventory's ``target``."""
    if device == LOCAL_DEVICE:
        return HOST_PROFILE
    return resolve_device(device, inventory).target


def with_power_model(options: BenchOptions, device: str, inventory=None, fallback_profile: str | None = None,
                     estimate_when_auto: bool = False) -> BenchOptions:
    """``options`` with the device profile's power model where the ``estimated`` source needs one.

    ``estimate_when_auto`` (sweeps): ``auto`` becomes the sensors in their usual order, then the estimate, when
    the profile has a power model. Raises UsageError when ``estimated`` is asked for and no model is known.
    """
    names = [n.strip() for n in options.power.split(",")]
    wanted = "estimated" in names or (estimate_when_auto and names == ["auto"])
    if not wanted or options.power_model is not None:
        return options
    profile = device_profile(device, inventory) or fallback_profile
    model = power_model(profile) if profile else None
    if "estimated" not in names:  # auto: the estimate only when there is one
        return options if model is None else replace(options, power=",".join([*AUTO_ORDER, "estimated"]),
                                                     power_model=model)
    if model is None:
        where = f"profile {profile!r} has no power model" if profile else \
            f"device {device!r} has no target profile in the inventory"
        raise UsageError(f"--power estimated: {where}; give --power-model IDLE_W,ACTIVE_W")
    return replace(options, power_model=model)
