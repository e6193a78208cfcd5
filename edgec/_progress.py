"""Progress lines for long work: shown on a terminal, silent when output is piped or --json is given."""

from __future__ import annotations

import os
import sys
import time

__all__ = ["Progress"]


class Progress:
    """Writes ``[k/n] step ... 1.2 s`` lines to the terminal's stderr.

    The stream is duplicated at construction, so progress stays visible while third-party console output is
    redirected into a log (see ``edgec._capture``).
    """

    def __init__(self, enabled: bool | None = None, total: int = 0):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.enabled = enabled
        self.total = total
        self.count = 0
        self._started = None
        self._stream = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1) if enabled else None

    def step(self, message: str) -> None:
        if not self.enabled:
            return
        self._finish()
        self.count += 1
        prefix = f"[{self.count}/{self.total}] " if self.total else ""
        self._stream.write(f"{prefix}{message} ...")
        self._stream.flush()
        self._started = time.perf_counter()

    def info(self, message: str) -> None:
        if self.enabled:
            self._finish()
            self._stream.write(f"  {message}\n")

    def _finish(self) -> None:
        if self._started is not None:
            self._stream.write(f" {time.perf_counter() - self._started:.1f} s\n")
            self._started = None

    def close(self) -> None:
        if self._stream is not None:
            self._finish()
            self._stream.close()
            self._stream = None
