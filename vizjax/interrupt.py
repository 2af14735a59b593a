"""Stopping a run cleanly: SIGINT/SIGTERM, and in a multi-process run every process when one stops.

A signal sets a flag that the run checks after each chunk (everything before is committed), so
it ends with :class:`vizjax.errors.Interrupted`, which the CLI reports in one line. In a
``jax.distributed`` run the process that stops also posts it in the coordination service
(:func:`vizjax.distributed.announce_stop`); the others see it at their next check, after their
chunk in flight or while they wait for the rest, and stop too: every process ends within about
one chunk's time, each part resumable, instead of waiting at a barrier for a process that is gone.
A process killed without a word (``kill -9``, a lost host) is seen gone when its heartbeat in the
coordination service's key-value store stops for :func:`vizjax.distributed.heartbeat_seconds`;
the others then stop the same way (exit 137, one line naming it). Process 0 hosts the service: when it dies, jax itself ends the
others at once (with its own fatal log, not one line).
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from vizjax import distributed
from vizjax.errors import Interrupted


class StopOnSignal:
    """SIGINT and SIGTERM (Ctrl-C, a scheduler's stop) set a flag that the run checks after
    each chunk, so it stops with everything written so far committed; a second signal stops at
    once (still safe: a chunk is committed whole or not at all). Handlers are installed only in
    the main thread and restored on exit.

    ``run`` names the run among the processes of a multi-process job (None: one process): a
    stop is then announced to the others, and :meth:`check` also stops when another process did.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, run: str | None = None) -> None:
        self.signum: int | None = None
        self.run = run
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise Interrupted(signum)
        self.signum = signum
        if sys.stderr.isatty():  # at a terminal, say at once that it was heard
            name = signal.Signals(signum).name
            print(f"\nvizjax: {name}: stopping after the chunk in flight", file=sys.stderr)

    def check(self, summary: dict[str, Any]) -> None:
        """Raise Interrupted (with ``summary``) if this process, or another of the run, stopped."""
        if self.signum is not None:
            if self.run is not None:
                distributed.announce_stop(self.run, self.signum)
            raise Interrupted(self.signum, summary)
        if self.run is not None:
            peer = distributed.stopped_peer(self.run)
            if peer is not None:
                process, signum = peer
                raise Interrupted(signum, summary, by=process)
            gone = distributed.gone_peer()
            if gone is not None:
                raise Interrupted(signal.SIGKILL, summary, by=gone)
