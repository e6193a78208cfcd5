"""Past one machine: sweeps and farms on a Ray cluster (``--cluster ADDRESS`` or ``EDGEC_CLUSTER``).

Without a cluster address nothing here imports Ray and every command runs as it always has, on this machine.
``open_cluster`` connects (bounded in time, one-line errors) and yields a ``Cluster`` whose compile, accuracy and
device work run on the cluster's nodes; see ``edgec.cluster.executor`` for what travels and what stays.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from edgec.cluster.connect import cluster_address, ray_session

__all__ = ["cluster_address", "open_cluster"]


@contextlib.contextmanager
def open_cluster(address: str, progress: bool | None = None, log: Path | None = None, timeout: float = 15.0):
    """Connect to the cluster at ``address`` for the block and yield a ``Cluster``."""
    from edgec.cluster.executor import Cluster

    with ray_session(address, timeout=timeout, log=log) as ray:
        yield Cluster(ray, progress)
