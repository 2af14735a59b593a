"""vizjax.interrupt: the first SIGINT/SIGTERM sets a flag the run checks after each chunk; a second
stops at once; the handlers are restored on exit. (A run stopped this way, end to end:
tests/test_faults.py.)"""

import os
import signal
import threading

import pytest

from vizjax.errors import Interrupted
from vizjax.interrupt import StopOnSignal


def test_first_signal_is_checked_after_the_chunk_second_stops_at_once():
    before = signal.getsignal(signal.SIGTERM)
    with StopOnSignal() as stop:
        stop.check({"done": 0})  # nothing heard: no stop
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM  # heard, and the run goes on to the chunk's end
        with pytest.raises(Interrupted) as e:
            stop.check({"done": 3})
        assert e.value.signum == signal.SIGTERM and e.value.summary == {"done": 3}
        assert str(e.value) == "interrupted by SIGTERM"
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGINT)  # the second: raised in the handler itself
    assert signal.getsignal(signal.SIGTERM) is before


def test_outside_the_main_thread_no_handler_is_installed():
    seen = {}

    def run():
        before = signal.getsignal(signal.SIGINT)
        with StopOnSignal() as stop:
            seen["same"] = signal.getsignal(signal.SIGINT) is before
            stop.check({})
        seen["ok"] = True

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == {"same": True, "ok": True}
