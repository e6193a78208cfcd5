"""Deploying bundles to devices over SSH and benchmarking them there, one device or a farm.

Modules (``ssh`` and its private ``_ssh_connect`` are the only ones that import paramiko):

- ``ssh``        connections: every step has a timeout; a stall watchdog frees transfers on a dead link;
                 ``_ssh_connect`` opens them (retries and backoff, host-key policy, ~/.ssh/config with
                 ProxyJump chains, keys and ssh-agent).
- ``ssh_options`` ``SshOptions``/``SshTarget``: the one set of SSH defaults, importable without paramiko.
- ``inventory``  the devices.toml inventory and ``--device user@host[:port]|NAME``.
- ``push``       the content-addressed bundle store on the device (``~/.edgec/bundles/<bundle_id>``):
                 upload to a temporary name, sha256-check on the device, rename; the agent the same way;
                 a broken link is reconnected and the upload resumed.
- ``local``      ``LocalAgent``: the agent zipapp run by this Python (``--device local``).
- ``remote``     ``SshAgent``: the agent on one SSH device (install, info, runtime check, push, bench).
                 Both implement ``edgec.device_agent.client.AgentRunner``, the one way every caller runs the
                 agent (bench, farm, sweep, demo, ``targets calibrate``).
- ``bench``      ``open_agent`` (device spec -> runner), ``run_bench``, ``bench_device`` (run and store),
                 ``with_power_model`` (``--power estimated`` from the device's profile).
- ``farm``       many devices in parallel with deadlines, Ctrl-C handling and a live display.
- ``rollout``    ``edgec deploy``/``rollback``: activate a bundle as the device's live model, health-check it
                 through the agent's HTTP service, roll back; canary rollouts against the benchmark p99.
- ``live``       the services' /metrics (Prometheus text, parsed with prometheus-client) as samples; drift.
- ``results``    the SQLite results store with forward migrations.

Decisions: remote benchmarks (``edgec bench --device`` and ``edgec farm bench``) are stored by default in
``~/.edgec/results.db``; a local ``edgec bench`` is stored only with ``--results PATH``. Connection setup is
retried and uploads are resumed; a benchmark is never retried.
"""

from __future__ import annotations

__all__ = ["bench", "farm", "inventory", "live", "local", "push", "remote", "results", "rollout", "ssh", "ssh_options"]
