"""``edgec farm bench --cluster``: the farm's devices benchmarked by actors on the nodes of their sites.

The same guarantees as the local farm (``edgec.deploy.farm``): every outcome is stored on the driver the moment
it arrives; a device that outlives its deadline is stopped (its actor killed, which closes its SSH connection)
and recorded as timed out; Ctrl-C keeps what finished and records nothing for devices stopped half way.
"""

from __future__ import annotations

import secrets
import time

from edgec.cluster.executor import Cluster
from edgec.cluster.transfer import pack
from edgec.deploy.farm import DeviceOutcome, FarmProgress, FarmRun, outcome_text
from edgec.deploy.interrupt import ctrl_c
from edgec.errors import ClusterError, DeviceTimeoutError

__all__ = ["cluster_check_devices", "cluster_farm_bench", "unserved_site_error"]

# The device's own steps have their deadlines inside the actor; this margin covers queueing behind another
# driver's benchmark of the same device and the actor's start.
_GRACE_S = 30.0


def unserved_site_error(device) -> dict:
    error = ClusterError(
        f"{device.name}: no node of the cluster serves site {device.site!r}; start one there with "
        f"`ray start --address HEAD:PORT --resources '{{\"site:{device.site}\": 1}}'`")
    return {"type": type(error).__name__, "message": str(error)}


def cluster_farm_bench(cluster: Cluster, devices: list, bundle, *, store, options, ssh,
                       device_timeout: float = 600.0, progress: FarmProgress | None = None) -> FarmRun:
    """Benchmark ``bundle`` on every device through its site's node; one outcome per device."""
    progress = progress or FarmProgress(devices, False)
    run = FarmRun(farm_run=secrets.token_hex(6), bundle_id=bundle.bundle_id)
    payload = cluster.put(pack(bundle.path))
    sites = cluster.served_sites()
    pending: dict = {}  # ref -> (device, actor, submitted)
    asked: dict[str, float] = {}  # device -> wall-clock time of submission, stored with the result
    outcomes: dict[str, DeviceOutcome] = {}

    def finish(device, started: float, reply: dict | None, error: dict | None) -> None:
        outcome = DeviceOutcome(device, seconds=time.monotonic() - started)
        if reply is not None and reply.get("result") is not None:
            outcome.result = {**reply["result"], "cluster": {
                "node_id": reply["node"], "site": device.site, "submitted": asked.get(device.name),
                "started": reply["started"], "finished": reply["finished"]}}
            outcome.pushed_bytes, outcome.push_resumes = reply.get("pushed_bytes"), reply.get("push_resumes")
        else:
            outcome.error = error or reply["error"]
        if store is not None:
            outcome.run_id = store.record(bundle_id=bundle.bundle_id, device=device.name, address=device.address,
                                          profile=device.target, result=outcome.result, error=outcome.error,
                                          farm_run=run.farm_run)
        progress.stage(device.name, "ok" if outcome.ok else "failed", outcome_text(outcome))
        outcomes[device.name] = outcome

    for device in devices:
        if device.site and device.site not in sites:
            finish(device, time.monotonic(), None, unserved_site_error(device))
            continue
        actor = cluster.device_actor(device)
        asked[device.name] = time.time()
        pending[actor.bench.remote(payload, options, ssh, device_timeout)] = (device, actor, time.monotonic())
        progress.stage(device.name, "queued", f"site {device.site}" if device.site else "any node")
    try:
        with ctrl_c() as pressed:  # the first Ctrl-C is an event polled here, never raised inside ray.wait
            while pending and not pressed.is_set():
                _collect(cluster, pending, finish, device_timeout)
                progress.draw()
            if pressed.is_set():
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        run.interrupted = True
        for _device, actor, _started in pending.values():
            cluster.kill(actor)
    progress.draw()
    run.outcomes = [outcomes[d.name] for d in devices if d.name in outcomes]
    return run


def _collect(cluster: Cluster, pending: dict, finish, device_timeout: float) -> None:
    """One round: finish what the cluster answered within 0.2 s, stop what outlived its deadline."""
    ray = cluster.ray
    ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.2)
    for ref in ready:
        device, _actor, started = pending.pop(ref)
        try:
            finish(device, started, ray.get(ref), None)
        except ray.exceptions.RayError as exc:  # the node or actor died under the benchmark
            finish(device, started, None, {"type": "ClusterError", "message": (
                f"{device.name}: the cluster lost its benchmark ({type(exc).__name__}); run it again")})
    now = time.monotonic()
    for ref, (device, actor, started) in list(pending.items()):
        if now - started > device_timeout + _GRACE_S:
            pending.pop(ref)
            cluster.kill(actor)
            error = DeviceTimeoutError(f"{device.name}: no outcome within the device timeout of "
                                       f"{device_timeout:g} s on the cluster; stopped")
            finish(device, started, None, {"type": type(error).__name__, "message": str(error)})


def cluster_check_devices(cluster: Cluster, devices: list, ssh, bundle=None, timeout: float = 120.0) -> list[dict]:
    """``farm check`` through each device's site node; rows in inventory order, errors per device."""
    ray = cluster.ray
    payload = cluster.put(pack(bundle.path)) if bundle is not None else None
    sites = cluster.served_sites()
    rows, pending = {}, {}
    for device in devices:
        if device.site and device.site not in sites:
            rows[device.name] = {"device": device.name, "address": device.address, "ok": False,
                                 "error": unserved_site_error(device)}
        else:
            pending[device.name] = cluster.device_actor(device).check.remote(ssh, payload)
    for name, ref in pending.items():
        try:
            rows[name] = ray.get(ref, timeout=timeout)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as exc:
            device = next(d for d in devices if d.name == name)
            rows[name] = {"device": name, "address": device.address, "ok": False,
                          "error": {"type": "ClusterError", "message": f"{name}: the cluster did not answer the "
                                                                       f"check ({type(exc).__name__})"}}
    return [rows[d.name] for d in devices]
