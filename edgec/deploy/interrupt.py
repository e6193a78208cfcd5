"""Ctrl-C as an event for the loops that watch worker threads (farm bench, the cluster farm).

Python delivers SIGINT as a KeyboardInterrupt raised wherever the main thread happens to be, including inside
``concurrent.futures.wait`` between acquiring and releasing the futures' locks: a worker that then finishes its
future blocks on that lock forever and the run never ends (seen once in CI on a loaded machine: the process
ignored Ctrl-C). Inside ``ctrl_c()`` the first Ctrl-C only sets an event that the loop polls; a second one
raises KeyboardInterrupt as usual, for a user who wants out at once.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["ctrl_c"]


@contextlib.contextmanager
def ctrl_c() -> Iterator[threading.Event]:
    """An event set by the first Ctrl-C while the block runs (on the main thread; elsewhere it is never set and
    KeyboardInterrupt behaves as usual)."""
    pressed = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield pressed
        return

    def handler(signum, frame):
        if pressed.is_set():
            raise KeyboardInterrupt
        pressed.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)
