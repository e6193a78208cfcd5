"""What a model or data argument names, parsed in one place: a path, ``file.py:function`` or ``module:function``.

Every front-end, the calibration loader, the manifest's source hash and the API's default output name read
``parse_source_spec``; a rule about which forms are accepted (e.g. ``module:function`` only when the user says so)
is a change here alone. Standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SourceSpec", "parse_source_spec"]

_MODULE = re.compile(r"[A-Za-z_][\w.]*")


@dataclass(frozen=True)
class SourceSpec:
    """``kind``: ``path`` (a file or directory; it may not exist), ``file`` (``file.py:function``) or ``module``
    (``pkg.module:function``). ``location`` is the path, the ``.py`` file or the module name; ``function`` the
    factory's name (None for a path)."""

    text: str
    kind: str
    location: str
    function: str | None = None

    @property
    def is_function(self) -> bool:
        return self.kind != "path"


def parse_source_spec(text: str | Path) -> SourceSpec:
    """An existing path is a path, whatever it contains; otherwise ``X:name`` with an identifier ``name`` is a
    function in the file ``X`` (ending ``.py``) or the module ``X``; anything else is a (missing) path."""
    text = str(text)
    if ":" not in text or Path(text).exists():
        return SourceSpec(text, "path", text)
    location, _, function = text.rpartition(":")
    if function.isidentifier():
        if location.endswith(".py"):
            return SourceSpec(text, "file", location, function)
        if _MODULE.fullmatch(location):
            return SourceSpec(text, "module", location, function)
    return SourceSpec(text, "path", text)
