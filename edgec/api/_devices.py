"""Devices: benchmark, push, the farm, and calibrating a device into a target profile."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from edgec.bundle import Bundle
from edgec.deploy.bench import BenchRun, bench_device, open_agent, with_power_model
from edgec.deploy.inventory import Device, load_inventory, select_devices
from edgec.deploy.results import ResultsStore
from edgec.deploy.ssh_options import SshOptions
from edgec.device_agent.options import BenchOptions
from edgec.settings import LOCAL_DEVICE

if TYPE_CHECKING:
    from edgec.deploy.farm import FarmProgress, FarmRun
    from edgec.deploy.push import PushReport

__all__ = [
    "BenchRun",
    "SshOptions",
    "bench",
    "calibrate_target",
    "devices",
    "farm_bench",
    "farm_check",
    "farm_progress",
    "farm_prune",
    "push",
]


def bench(bundle: str | os.PathLike, device: str = LOCAL_DEVICE, *, inventory=None, trust_new_host: bool = False,
          ssh: SshOptions | None = None, results: str | os.PathLike | None = None, quiet: bool = True,
          **options) -> BenchRun:
    """Benchmark a bundle with the device agent; the BenchRun holds the agent's BenchResult document.

    ``device`` is ``local``, ``user@host[:port]`` or an inventory name; remote runs push the bundle when needed.
    ``options`` are the fields of ``edgec.device_agent.options.BenchOptions`` (runs, warmup, threads, power...);
    ``power="estimated"`` without ``power_model`` takes the device profile's model (``host`` locally), as
    ``edgec bench`` does. Remote results are stored in ``results`` (default ``~/.edgec/results.db``); local ones
    only when it is given. ``quiet=False`` lets a local agent's progress through to stderr.
    """
    bench_options = with_power_model(BenchOptions(**options), device, inventory)
    ssh = ssh or SshOptions(trust_new_host=trust_new_host)
    if device == LOCAL_DEVICE and not results:
        return bench_device(bundle, device, bench_options, quiet=quiet)
    with ResultsStore(results) as store:
        return bench_device(bundle, device, bench_options, inventory=inventory, ssh=ssh, store=store, quiet=quiet)


def push(bundle: str | os.PathLike, device: str, *, inventory=None, trust_new_host: bool = False,
         ssh: SshOptions | None = None, progress=None) -> PushReport:
    """Copy a bundle to a device's content-addressed store; ``progress(sent, total)`` is called as it goes."""
    from edgec.deploy.inventory import resolve_device
    from edgec.deploy.push import push_bundle
    from edgec.deploy.ssh import connect  # paramiko

    target = resolve_device(device, inventory)
    with connect(target.ssh_target(), ssh or SshOptions(trust_new_host=trust_new_host)) as conn:
        return push_bundle(conn, Bundle(bundle), progress=progress)


def devices(inventory=None, tags: tuple[str, ...] = (), names: tuple[str, ...] = ()) -> list[Device]:
    """The inventory's devices carrying every tag in ``tags`` (and named in ``names`` when given)."""
    return select_devices(load_inventory(inventory), tuple(tags), tuple(names))


def farm_progress(selected: list[Device], enabled: bool) -> FarmProgress:
    """A live table of ``selected`` devices on stderr for ``farm_bench`` (silent when not ``enabled``)."""
    from edgec.deploy.farm import FarmProgress  # paramiko

    return FarmProgress(selected, enabled=enabled)


def farm_bench(bundle: str | os.PathLike, *, inventory=None, tags: tuple[str, ...] = (), names: tuple[str, ...] = (),
               parallel: int = 8, device_timeout: float = 600.0, results: str | os.PathLike | None = None,
               trust_new_host: bool = False, ssh: SshOptions | None = None, progress: FarmProgress | None = None,
               **options) -> FarmRun:
    """Benchmark a bundle on every selected inventory device in parallel; returns the FarmRun (one outcome
    per device, each stored in the results database as soon as it is known). ``progress``: a FarmProgress
    (a live table on a terminal) for the same devices; see ``farm_progress``."""
    from edgec.deploy.farm import farm_bench as run_farm  # paramiko

    selected = devices(inventory, tags, names)
    with ResultsStore(results) as store:
        return run_farm(selected, Bundle(bundle), store=store, options=BenchOptions(**options),
                        ssh=ssh or SshOptions(trust_new_host=trust_new_host), parallel=parallel,
                        device_timeout=device_timeout, progress=progress)


def farm_check(*, inventory=None, tags: tuple[str, ...] = (), parallel: int = 8, bundle=None,
               trust_new_host: bool = False, ssh: SshOptions | None = None) -> list[dict]:
    """One row per selected device: reachable, Python, runtimes, free disk, bundle store and agent version
    (installs the agent); with ``bundle``, whether the device has the runtime it needs."""
    from edgec.deploy.farm import check_devices  # paramiko

    return check_devices(devices(inventory, tags), ssh or SshOptions(trust_new_host=trust_new_host), parallel,
                         bundle=Bundle(bundle) if bundle else None)


def farm_prune(*, inventory=None, tags: tuple[str, ...] = (), keep: int = 5, older_than_days: float | None = None,
               dry_run: bool = False, parallel: int = 8, trust_new_host: bool = False,
               ssh: SshOptions | None = None) -> list[dict]:
    """Remove old bundles, stale uploads and other agents from each selected device: one row per device."""
    from edgec.deploy.farm import prune_devices  # paramiko

    return prune_devices(devices(inventory, tags), ssh or SshOptions(trust_new_host=trust_new_host), keep,
                         older_than_days, dry_run, parallel)


def calibrate_target(device: str = LOCAL_DEVICE, name: str | None = None, base: str | None = None, *,
                     quick: bool = False, threads: int | None = None, inventory=None, trust_new_host: bool = False,
                     ssh: SshOptions | None = None, progress=None, sysfs_root: str = "/sys") -> tuple[Path, dict]:
    """Measure ``device`` with the micro-benchmark suite and write the overlay ``$EDGEC_HOME/targets/NAME.toml``;
    returns (path, overlay document). The runner is opened here and handed to ``edgec.targets.calibrate``."""
    from edgec.targets.calibrate import calibrate_target as calibrate

    ssh = ssh or SshOptions(trust_new_host=trust_new_host)
    with open_agent(device, inventory, ssh, timeout=3600.0) as agent:
        return calibrate(agent, name, base, quick=quick, threads=threads, progress=progress, sysfs_root=sysfs_root)
