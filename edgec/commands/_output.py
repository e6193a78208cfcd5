"""Shared printing helpers for commands: JSON documents and aligned tables."""

from __future__ import annotations

import json
import sys

import click

__all__ = ["echo_json", "human_bytes", "table", "wants_json"]


def wants_json(flag: bool) -> bool:
    """--json was given."""
    return bool(flag)


def echo_json(document) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True, default=str))


def table(rows: list[list], headers: list[str]) -> str:
    """Plain aligned columns (no box drawing: it pastes into issues and logs); control characters escaped."""
    from edgec.device_agent.text import terminal_safe

    cells = [[str(h) for h in headers]] + [["" if c is None else terminal_safe(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def is_terminal() -> bool:
    return sys.stdout.isatty()
