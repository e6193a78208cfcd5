"""Reaching a Ray cluster: ``--cluster ADDRESS`` or ``EDGEC_CLUSTER``; nothing imports Ray without one.

Addresses: ``local`` starts an in-process Ray on this machine (one machine, no cluster to set up); ``auto`` joins
the cluster this machine's ``ray start`` belongs to; ``HOST:PORT`` is a head node's GCS address; ``ray://HOST:PORT``
goes through the head's Ray Client server. The head is probed with a plain TCP connect first, so an unreachable
address fails in bounded time with one line instead of Ray's retry loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from pathlib import Path

from edgec.errors import ClusterError, UsageError

__all__ = ["cluster_address", "ray_session"]

ENV = "EDGEC_CLUSTER"


def cluster_address(option: str | None) -> str | None:
    """The cluster to use: the option, else ``$EDGEC_CLUSTER``, else None (the local path, no Ray)."""
    address = option if option is not None else os.environ.get(ENV)
    return address.strip() if address and address.strip() else None


def _host_port(address: str) -> tuple[str, int] | None:
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UsageError(f"--cluster {address!r}: give local, auto, HOST:PORT (the head's GCS port, 6379 by "
                         "default) or ray://HOST:PORT (its client server, 10001 by default)")
    return host.strip("[]"), int(port)


def _probe(address: str, timeout: float) -> None:
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterError(f"--cluster {address}: nothing answers at {host}:{port} within {timeout:g} s "
                           f"({exc.strerror or exc}); start the head with `ray start --head` or check the address"
                           ) from None


@contextlib.contextmanager
def ray_session(address: str, timeout: float = 15.0, log: Path | None = None):
    """Connect this process to the cluster for the duration of the block (``ray.shutdown`` after)."""
    if address not in ("local", "auto"):
        _probe(address, timeout)
    try:
        import ray
    except ImportError:
        raise ClusterError("--cluster needs Ray on this machine: pip install 'ray[default]' (the same version on "
                           "every node)") from None
    kwargs = dict(logging_level=logging.ERROR, log_to_driver=False, configure_logging=True,
                  include_dashboard=False)
    if address == "local":
        kwargs.update(num_cpus=os.cpu_count() or 1, object_store_memory=256 * 2**20, _node_ip_address="127.0.0.1")
    else:
        kwargs.pop("include_dashboard")
        kwargs["address"] = address
    with _quiet(log):
        try:
            ray.init(**kwargs)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError or its own types here
            raise ClusterError(f"--cluster {address}: Ray could not connect: {' '.join(str(exc).split())[:300]}"
                               ) from None
    # Ray's driver threads print the cluster's notices (a task retried after its node died, ...) to sys.stdout,
    # which --json keeps for the one document a command prints after the session: they go to the log instead.
    sink = open(log, "a") if log else open(os.devnull, "w")  # noqa: SIM115 - closed below
    try:
        with contextlib.redirect_stdout(sink):
            yield ray
    finally:
        # Shutdown too: a notice that arrives late (a raylet that died during the run) is printed while Ray's
        # threads stop; in a CI run it preceded a sweep's --json document on stdout.
        with contextlib.redirect_stdout(sink), _quiet(log):
            ray.shutdown()
        sink.close()


@contextlib.contextmanager
def _quiet(log: Path | None):
    """Ray's start-up chatter goes to ``log`` (or nowhere), not to the user's terminal."""
    sink = open(log, "a") if log else open(os.devnull, "w")  # noqa: SIM115 - closed below
    saved = os.dup(2)
    try:
        sys.stderr.flush()
        os.dup2(sink.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        sink.close()
