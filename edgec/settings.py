"""Settings every layer shares, each defined once: the local device's name and where edgec keeps its files.

``$EDGEC_HOME`` (default ``~/.edgec``) holds the user's target overlays (``targets/``), the device inventory
(``devices.toml``), the results database (``results.db``), built agent zipapps (``agent/``) and calibration
bundles (``calibration/``). Standard library only: importable from every layer.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["HOST_PROFILE", "LOCAL_DEVICE", "agent_cache_dir", "edgec_home"]

# ``--device local``: this machine, through the same agent zipapp a device runs, without SSH.
LOCAL_DEVICE = "local"
# The profile detected from this machine (what ``--device local`` is measured against).
HOST_PROFILE = "host"


def edgec_home() -> Path:
    """``$EDGEC_HOME``, default ``~/.edgec``."""
    return Path(os.environ.get("EDGEC_HOME", Path.home() / ".edgec"))


def agent_cache_dir() -> Path:
    """Where the host keeps built agent zipapps (``$EDGEC_HOME/agent``)."""
    return edgec_home() / "agent"
