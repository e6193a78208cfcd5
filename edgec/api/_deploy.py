"""Live models: deploy a bundle as the devices' inference service, roll it back, and sample the services.

The SSH layer and paramiko load only when a device is contacted (``edgec.deploy.rollout``/``live``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgec.bundle import Bundle
from edgec.deploy.interrupt import ctrl_c
from edgec.deploy.inventory import Device, load_inventory, resolve_device, select_devices
from edgec.deploy.results import ResultsStore
from edgec.deploy.ssh_options import SshOptions
from edgec.errors import UsageError

if TYPE_CHECKING:
    from edgec.deploy.rollout import DeviceRollout, Rollout

__all__ = ["FarmStatus", "ctrl_c", "deploy_bundle", "deploy_targets", "farm_status", "rollback", "watch_farm_status"]


def deploy_targets(device_names: tuple[str, ...] = (), tags: tuple[str, ...] = (), inventory=None) -> list[Device]:
    """The devices of a deploy or rollback: ``device_names`` (inventory names or ``user@host[:port]``) or every
    inventory device carrying all ``tags``; exactly one of the two."""
    if device_names and tags:
        raise UsageError("give --device or --tag, not both")
    if not device_names and not tags:
        raise UsageError("give --device NAME|user@host[:port] (repeatable) or --tag TAG")
    if tags:
        return select_devices(load_inventory(inventory), tuple(tags))
    return [resolve_device(name, inventory) for name in device_names]


def deploy_bundle(bundle: str | os.PathLike, devices: tuple[str, ...] = (), *, tags: tuple[str, ...] = (), inventory=None,
           canary: int = 0, canary_time: float = 60.0, margin_pct: float = 50.0, probe_count: int = 20,
           parallel: int = 8, results: str | os.PathLike | None = None, trust_new_host: bool = False,
           ssh: SshOptions | None = None, progress=None, **serve) -> Rollout:
    """Make ``bundle`` the live model of each device's inference service, check it serves and reproduces its
    reference outputs, and roll back any device where it does not; returns the ``Rollout`` (one ``DeviceRollout``
    per device), every outcome recorded in ``results``. ``serve``: the fields of ``edgec.deploy.rollout.ServeOptions``
    (port, host, token_file, threads, service, health_timeout). ``canary=K`` deploys to the first K devices, watches their live p99 against the
    benchmark p99 (+ ``margin_pct``) for ``canary_time`` seconds, then to the rest (see ``edgec.deploy.rollout``).
    ``progress(device, stage)`` is called as each device moves on."""
    from edgec.deploy.rollout import ServeOptions
    from edgec.deploy.rollout import deploy as run_deploy  # paramiko

    options = ServeOptions(**serve)
    selected = deploy_targets(tuple(devices), tuple(tags), inventory)
    with ResultsStore(results) as store:
        return run_deploy(selected, Bundle(bundle), ssh or SshOptions(trust_new_host=trust_new_host), options,
                          store=store, canary=canary, canary_time=canary_time,
                          margin_pct=margin_pct, probe_count=probe_count, parallel=parallel, progress=progress)


def rollback(devices: tuple[str, ...], *, to: str | None = None, health_timeout: float = 30.0, inventory=None,
             results: str | os.PathLike | None = None, trust_new_host: bool = False,
             ssh: SshOptions | None = None) -> list[DeviceRollout]:
    """Activate ``to`` (a bundle id or 8+ character prefix) or the previous bundle on each device and wait until
    its service serves it; one ``DeviceRollout`` per device, each recorded in ``results``."""
    from edgec.deploy.rollout import rollback_device, rollout_recorder  # paramiko

    ssh = ssh or SshOptions(trust_new_host=trust_new_host)
    with ResultsStore(results) as store:
        return [rollback_device(device, ssh, to, health_timeout, record=rollout_recorder(store))
                for device in deploy_targets(tuple(devices), (), inventory)]


@dataclass
class FarmStatus:
    """One sampling round of the devices' services: one sample per device, in inventory order (keys as in
    ``edgec.deploy.live.sample_from_status``; an unreachable device has ``error`` and drift ``unreachable``)."""

    samples: list[dict] = field(default_factory=list)

    @property
    def unreachable(self) -> list[str]:
        return [s["device"] for s in self.samples if "unreachable" in (s.get("drift") or [])]

    def to_dict(self) -> list[dict]:
        return self.samples


def watch_farm_status(*, inventory=None, tags: tuple[str, ...] = (), names: tuple[str, ...] = (),
                      margin_pct: float = 50.0, parallel: int = 8, results: str | os.PathLike | None = None,
                      interval: float | None = None, trust_new_host: bool = False,
                      ssh: SshOptions | None = None) -> Iterator[FarmStatus]:
    """Sampling rounds of the selected devices' services, each stored in ``results``: one round when
    ``interval`` is None, else a round every ``interval`` seconds for as long as the caller iterates."""
    from edgec.deploy.live import farm_status as sample_farm  # paramiko

    selected = select_devices(load_inventory(inventory), tuple(tags), tuple(names))
    ssh = ssh or SshOptions(trust_new_host=trust_new_host)
    with ResultsStore(results) as store:
        while True:
            yield FarmStatus(sample_farm(selected, ssh, store, margin_pct, parallel))
            if interval is None:
                return
            time.sleep(interval)


def farm_status(**options) -> FarmStatus:
    """One sampling round (the options of ``watch_farm_status`` but ``interval``)."""
    return next(watch_farm_status(**options))
