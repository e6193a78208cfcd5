"""A fake sysfs tree for the power-sensor tests: attributes written atomically, as the kernel presents them."""

from __future__ import annotations

import os

__all__ = ["put"]


def put(root, rel: str, value) -> None:
    """Write one sysfs attribute atomically (a reader never sees a half-written file)."""
    path = os.path.join(str(root), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(f"{value}\n")
    os.replace(tmp, path)
