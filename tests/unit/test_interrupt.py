"""Ctrl-C as an event for the farm's watching loop: the first sets it, the second raises, the handler is restored."""
import os
import signal
import threading

import pytest

from edgec.deploy.interrupt import ctrl_c

pytestmark = pytest.mark.unit


def _wait_for(event: threading.Event) -> bool:
    return event.wait(10)  # liveness only: the signal is handled at the next bytecode


def test_first_ctrl_c_sets_the_event_second_raises_and_the_old_handler_returns():
    before = signal.getsignal(signal.SIGINT)
    with ctrl_c() as pressed:
        os.kill(os.getpid(), signal.SIGINT)
        assert _wait_for(pressed)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            threading.Event().wait(10)  # the handler raises here
    assert signal.getsignal(signal.SIGINT) is before


def test_off_the_main_thread_the_event_is_never_set_and_nothing_is_installed():
    seen = {}

    def worker():
        before = signal.getsignal(signal.SIGINT)
        with ctrl_c() as pressed:
            seen["installed"] = signal.getsignal(signal.SIGINT) is not before
            seen["set"] = pressed.is_set()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    assert seen == {"installed": False, "set": False}
