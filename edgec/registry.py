"""One registry style for everything chosen by name: commands, runtimes, emitters, compile stages and
front-ends.

A ``Registry`` maps names to entries and rejects a name registered twice, so two plug-ins claiming one name is
an error where it happens, not a silent override. An entry is an object, or a lazy ``"module:attribute"``
reference imported on first ``get``: registering costs nothing, and heavy libraries load only for the entry
used. Standard library only (shipped inside the device agent with ``edgec.runtimes``; Python 3.9+).
"""

from __future__ import annotations

import importlib

from edgec.errors import UsageError

__all__ = ["Registry"]


class Registry:
    """Named entries of one kind (``kind`` names them in messages: "runtime", "command", ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict = {}
        self._info: dict = {}

    def add(self, name: str, entry, **info) -> None:
        """Register ``entry`` (an object or ``"module:attribute"``) under ``name``; ``info`` is free metadata."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        self._info[name] = info

    def register(self, name: str, **info):
        """Decorator form of ``add``."""
        def decorate(obj):
            self.add(name, obj, **info)
            return obj
        return decorate

    def get(self, name: str):
        """The entry called ``name`` (imported on first use); UsageError listing the known names otherwise."""
        if name not in self._entries:
            raise UsageError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = self._entries[name] = _resolve(entry)
        return entry

    def reference(self, name: str) -> str | None:
        """The ``"module:attribute"`` of a lazy entry not imported yet (None otherwise), without importing it."""
        entry = self._entries.get(name)
        return entry if isinstance(entry, str) else None

    def info(self, name: str) -> dict:
        return self._info[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


def _resolve(reference: str):
    module, _, attribute = reference.partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, attribute) if attribute else loaded
