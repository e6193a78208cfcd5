"""Strings from devices and files, made safe to show: on a terminal and in matplotlib text.

A device's hostname, CPU model or error message is whatever the device says. Written raw to a terminal, an
escape sequence in it could retitle the window, hide lines or (OSC 52) write the clipboard; in a plot title,
``$...$`` is parsed as math text and can fail the whole report. Standard library only (shipped in the agent).
"""

from __future__ import annotations

import re

__all__ = ["terminal_safe"]

# C0 and C1 control characters, DEL, and the Unicode bidirectional overrides that reorder what is shown.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_KEEP_NEWLINES = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text, keep_newlines: bool = False) -> str:
    """``text`` with every control character written as an escape (``\\x1b``); newlines kept when asked."""
    return (_UNSAFE_KEEP_NEWLINES if keep_newlines else _UNSAFE).sub(_escape, str(text))
