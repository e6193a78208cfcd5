"""Past one machine: sweeps and farms on a Ray cluster (``--cluster ADDRESS`` or ``EDGEC_CLUSTER``).

Without a cluster address nothing here imports Ray and every command runs as it always has, on this machine.
``open_cluster`` connects (bounded in time, one-line errors) and yields a ``Cluster`` whose compile, accuracy and
device work run on the cluster's nodes; see ``edgec.cluster.executor`` for what travels and what stays.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from edgec.cluster.connect import cluster_address, ray_session

__all__ = ["calibrate_target", "cluster_address", "deploy", "farm_bench", "farm_check", "open_cluster"]


@contextlib.contextmanager
def open_cluster(address: str, progress: bool | None = None, log: Path | None = None, timeout: float = 15.0):
    """Connect to the cluster at ``address`` for the block and yield a ``Cluster``."""
    from edgec.cluster.executor import Cluster

    with ray_session(address, timeout=timeout, log=log) as ray:
        yield Cluster(ray, progress)


def calibrate_target(address: str, device: str, name: str | None = None, base: str | None = None, *,
                     quick: bool = False, threads: int | None = None, inventory=None, ssh=None,
                     sysfs_root: str = "/sys") -> tuple[Path, dict]:
    """``edgec.api.calibrate_target`` for an inventory device, measured from the node of its site; the overlay
    is written here, in this machine's ``$EDGEC_HOME/targets``."""
    from edgec.deploy.inventory import resolve_device
    from edgec.deploy.ssh_options import SshOptions
    from edgec.errors import ClusterError, EdgecError
    from edgec.targets import user_targets_dir
    from edgec.targets.overlay import write_overlay

    resolved = resolve_device(device, inventory)
    with open_cluster(address, progress=False) as cluster:
        if resolved.site and resolved.site not in cluster.served_sites():
            from edgec.cluster.farm import unserved_site_error

            raise ClusterError(unserved_site_error(resolved)["message"])
        actor = cluster.device_actor(resolved)
        reply = cluster.ray.get(actor.calibrate.remote(ssh or SshOptions(), name=name, base=base, quick=quick,
                                                       threads=threads, sysfs_root=sysfs_root))
    if reply["error"]:
        error = EdgecError(reply["error"]["message"])
        error.exit_code = reply["error"]["exit_code"]
        raise error
    return write_overlay(reply["overlay"], user_targets_dir()), reply["overlay"]


def farm_bench(address: str, bundle, *, inventory=None, tags: tuple[str, ...] = (), names: tuple[str, ...] = (),
               device_timeout: float = 600.0, results=None, ssh=None, progress=None, **options):
    """``edgec.api.farm_bench`` through the cluster at ``address``: each device benchmarked from its site's node;
    returns the same FarmRun, every outcome stored in ``results`` on this machine as it arrives."""
    from edgec.api import devices
    from edgec.bundle import Bundle
    from edgec.cluster.farm import cluster_farm_bench
    from edgec.deploy.results import ResultsStore
    from edgec.deploy.ssh_options import SshOptions
    from edgec.device_agent.options import BenchOptions

    selected = devices(inventory, tags, names)
    with ResultsStore(results) as store, open_cluster(address, progress=False) as cluster:
        run = cluster_farm_bench(cluster, selected, Bundle(bundle), store=store, options=BenchOptions(**options),
                                 ssh=ssh or SshOptions(), device_timeout=device_timeout, progress=progress)
        run.results_db = str(store.path)
    return run


def farm_check(address: str, *, inventory=None, tags: tuple[str, ...] = (), bundle=None, ssh=None) -> list[dict]:
    """``edgec.api.farm_check`` through the cluster at ``address``: one row per device, from its site's node."""
    from edgec.api import devices
    from edgec.bundle import Bundle
    from edgec.cluster.farm import cluster_check_devices
    from edgec.deploy.ssh_options import SshOptions

    with open_cluster(address, progress=False) as cluster:
        return cluster_check_devices(cluster, devices(inventory, tags), ssh or SshOptions(),
                                     Bundle(bundle) if bundle else None)


def deploy(address: str, bundle, devices: tuple[str, ...] = (), *, tags: tuple[str, ...] = (), inventory=None,
           results=None, ssh=None, canary: int = 0, progress=None, **serve):
    """``edgec.api.deploy_bundle`` through the cluster at ``address``: each device is deployed (push, activate, health
    check, rollback on failure) by the actor of its site's node; the rollouts are recorded in ``results`` here.
    Canary rollouts watch live latency from the driver, so they need a driver that reaches the devices: refused."""
    from edgec.api import deploy_targets
    from edgec.bundle import Bundle
    from edgec.deploy.results import ResultsStore
    from edgec.deploy.rollout import ServeOptions
    from edgec.deploy.ssh_options import SshOptions
    from edgec.errors import UsageError

    if canary:
        raise UsageError("--canary with --cluster: canaries are watched from this machine, which may not reach "
                         "them; deploy the canaries without --cluster from a machine on their network")
    opts = ServeOptions(**serve)
    selected = deploy_targets(tuple(devices), tuple(tags), inventory)
    with ResultsStore(results) as store:
        return _deploy(address, Bundle(bundle), selected, ssh or SshOptions(), opts, store, progress)


def _deploy(address: str, bundle, devices: list, ssh, opts, store, progress):
    """The rollout of ``deploy``, device by device on the actors of their sites."""
    import secrets

    from edgec.cluster.farm import unserved_site_error
    from edgec.cluster.transfer import pack
    from edgec.deploy.rollout import DeviceRollout, Rollout, rollout_recorder
    from edgec.errors import UsageError

    if not devices:
        raise UsageError("no devices selected: give --device NAME or a --tag that matches the inventory")
    run = Rollout(secrets.token_hex(6), bundle.bundle_id)
    record = rollout_recorder(store, run.rollout)
    outcomes: dict[str, DeviceRollout] = {}
    with open_cluster(address, progress=False) as cluster:
        payload, sites, pending = cluster.put(pack(bundle.path)), cluster.served_sites(), {}
        for device in devices:
            if device.site and device.site not in sites:
                outcomes[device.name] = DeviceRollout(device.name, bundle.bundle_id, stage="cluster",
                                                      reason=unserved_site_error(device)["message"])
                record(device.name, "deploy", bundle.bundle_id, None, "failed", outcomes[device.name].reason)
            else:
                pending[cluster.device_actor(device).deploy.remote(payload, ssh, opts)] = device
                if progress is not None:
                    progress(device.name, f"queued on the cluster (site {device.site or 'any'})")
        for ref, device in pending.items():
            try:
                reply = cluster.ray.get(ref)
            except cluster.ray.exceptions.RayError as exc:
                outcomes[device.name] = DeviceRollout(device.name, bundle.bundle_id, stage="cluster", reason=(
                    f"the cluster lost the deploy ({type(exc).__name__}); check the device with `edgec farm status`"))
                record(device.name, "deploy", bundle.bundle_id, None, "failed", outcomes[device.name].reason)
                continue
            for entry in reply["records"]:
                record(*entry)
            outcomes[device.name] = reply["rollout"]
    run.devices = [outcomes[d.name] for d in devices]
    return run
