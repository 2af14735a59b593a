"""Multi-process runs through ``jax.distributed``: who does which filters, and waiting for the rest.

Each process optimizes its own share of the filters on its own local devices (no cross-process
communication is needed: filters are independent) and writes its own part file; process 0 waits
for every process and joins the parts into one atlas (:func:`vizjax.atlas.merge_atlases`).

Launch (one command per process; Slurm and Cloud TPU pods need no arguments at all, jax reads
their environment)::

    vizjax atlas --layer block5_conv1 --out atlas.h5 \\
        --coordinator host0:1234 --num-processes 2 --process-id 0   # on host 0
    ... --process-id 1                                              # on host 1
    srun vizjax atlas --layer block5_conv1 --out atlas.h5 --distributed  # Slurm
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

from vizjax.errors import Interrupted, VizjaxError

#: Seconds without a heartbeat after which a process counts as gone (killed with ``kill -9``, its
#: host lost; :func:`gone_peer`): the others then stop within about this time, after their chunk
#: in flight. jax's coordination service gets the same timeout (its default is 100 s).
#: ``VIZJAX_HEARTBEAT_SECONDS`` overrides it.
HEARTBEAT_S = 30


def heartbeat_seconds() -> int:
    """:data:`HEARTBEAT_S`, or ``VIZJAX_HEARTBEAT_SECONDS`` (an integer 1..3600, else VizjaxError)."""
    text = os.environ.get("VIZJAX_HEARTBEAT_SECONDS")
    if text is None:
        return HEARTBEAT_S
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 3600:
        raise VizjaxError(f"VIZJAX_HEARTBEAT_SECONDS must be an integer in 1..3600, got {text!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Job:
    """The multi-process arguments, checked (:func:`job`): none (one process), ``auto`` alone
    (the cluster's environment), or a complete ``coordinator``, ``num_processes``, ``process_id``."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    auto: bool = False


def job(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    auto: bool = False,
) -> Job:
    """The :class:`Job` these arguments ask for, checked (:func:`check`)."""
    check(coordinator, num_processes, process_id, auto)
    return Job(coordinator, num_processes, process_id, auto)


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    auto: bool = False,
) -> None:
    """Start ``jax.distributed`` from explicit arguments, or from the cluster's environment (``auto``).

    VizjaxError (before anything starts) for a partial set of arguments: ``--num-processes`` or
    ``--process-id`` without ``--coordinator`` would otherwise run as one process over all filters
    (on several hosts: the same work on each, racing for one file).
    """
    start(job(coordinator, num_processes, process_id, auto))


def start(j: Job) -> None:
    """Start ``jax.distributed`` for a checked :class:`Job` (nothing for one process); before
    anything else touches a JAX backend."""
    coordinator, num_processes, process_id = j.coordinator, j.num_processes, j.process_id
    if coordinator is None and not j.auto:
        return
    timeouts = {"heartbeat_timeout_seconds": heartbeat_seconds()}
    # Without it, the coordination service aborts every process (a C++ stack trace, exit 134)
    # when one dies; with it the others see the process gone (gone_peer) and stop in one line,
    # their parts resumable. Our own waits (wait_for_all) synchronize the end of a run.
    jax.config.update("jax_enable_recoverability", True)
    try:
        if coordinator is not None:
            if num_processes is None or process_id is None:
                raise VizjaxError("--coordinator needs --num-processes and --process-id")
            jax.distributed.initialize(coordinator, num_processes, process_id, **timeouts)
        else:
            jax.distributed.initialize(**timeouts)
    except (RuntimeError, ValueError) as e:
        raise VizjaxError(f"jax.distributed.initialize failed: {e}") from None
    threading.Thread(target=_beat, name="vizjax-heartbeat", daemon=True).start()
    # Registered after jax's own exit hook, so it runs first (atexit is last in, first out).
    atexit.register(_leave)


#: Seconds process 0 waits at exit for the others to leave the coordination service it hosts.
LEAVE_S = 60.0


def _leave() -> None:
    """At exit: the other processes disconnect from the coordination service, process 0 (which
    hosts it) waits until they did (at most :data:`LEAVE_S`). With recoverable tasks the service
    has no shutdown barrier, and a process whose disconnect finds the service gone is aborted
    by jax (a C++ stack trace instead of the run's one line)."""
    with contextlib.suppress(Exception):
        if jax.process_index() != 0:
            jax.distributed.shutdown()
            return
        # get_live_nodes returns once every other process called it too or left (or is seen
        # dead): a barrier, so in a thread of its own, waited for at most LEAVE_S.
        count = jax.process_count()
        waiter = threading.Thread(
            target=lambda: _client().get_live_nodes(list(range(count))), daemon=True
        )
        waiter.start()
        waiter.join(LEAVE_S)


def check(
    coordinator: str | None, num_processes: int | None, process_id: int | None, auto: bool
) -> None:
    """VizjaxError unless the multi-process arguments are none, ``auto`` alone, or complete (and
    ``VIZJAX_HEARTBEAT_SECONDS`` valid)."""
    if coordinator is not None or auto:
        heartbeat_seconds()
    given = num_processes is not None or process_id is not None
    if coordinator is None and given and not auto:
        raise VizjaxError(
            "--num-processes and --process-id need --coordinator HOST:PORT (or --distributed)"
        )
    if coordinator is not None:
        if num_processes is None or process_id is None:
            raise VizjaxError("--coordinator needs --num-processes and --process-id")
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise VizjaxError(
                f"--process-id must be in 0..{num_processes - 1} and --num-processes >= 1, got "
                f"--process-id {process_id} --num-processes {num_processes}"
            )


def share(filters: Sequence[int], index: int | None = None, count: int | None = None) -> np.ndarray:
    """This process's share of ``filters``: every ``count``-th one starting at ``index`` (balanced
    across layers whose late filters are no costlier than early ones)."""
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
    return np.asarray(list(filters), np.int32)[index::count]


def _client():  # -> the coordination service client of jax.distributed
    from jax._src import distributed as _dist  # its key-value store and barriers; no collective

    client = _dist.global_state.client
    if client is None:
        raise VizjaxError("jax.distributed is not initialized")
    return client


def announce_stop(run: str, signum: int) -> None:
    """Tell the other processes of ``run`` that this one stopped (by ``signum``); best effort."""
    if jax.process_count() == 1:
        return
    with contextlib.suppress(Exception):  # already announced, or the service is gone
        _client().key_value_set(f"vizjax/{run}/stop", f"{jax.process_index()} {signum}")


def stopped_peer(run: str) -> tuple[int, int] | None:
    """``(process, signum)`` if a process of ``run`` announced a stop, else None."""
    if jax.process_count() == 1:
        return None
    try:
        value = _client().key_value_try_get(f"vizjax/{run}/stop")
    except Exception:  # NOT_FOUND: nobody stopped
        return None
    process, signum = str(value).split()
    return int(process), int(signum)


#: Seconds between two heartbeats of a process in the key-value store (:func:`gone_peer`).
BEAT_S = 1.0
_BEATS = "vizjax/beat/"
#: Per process: its last heartbeat value seen, and when (this process' monotonic clock).
_seen: dict[int, tuple[str | None, float]] = {}


def _beat() -> None:
    """Post this process' heartbeat every :data:`BEAT_S` (a daemon thread, for the run's life)."""
    key, n = f"{_BEATS}{jax.process_index()}", 0
    with contextlib.suppress(Exception):  # the service is gone: so is the run
        while True:
            _client().key_value_set(key, str(n), allow_overwrite=True)
            n += 1
            time.sleep(BEAT_S)


def gone_peer() -> int | None:
    """The first other process whose heartbeat (:func:`_beat`) has not changed for
    :func:`heartbeat_seconds` (killed without a word, its host lost), else None; None too where
    the coordination service itself is gone (:func:`wait_for_all` says so). Reads the key-value
    store only: no barrier with the others (``get_live_nodes`` is one)."""
    count = jax.process_count()
    if count == 1:
        return None
    try:
        beats = dict(_client().key_value_dir_get(_BEATS))
    except Exception:
        return None
    now, limit = time.monotonic(), heartbeat_seconds()
    for process in range(count):
        if process == jax.process_index():
            continue
        value = beats.get(f"{_BEATS}{process}")
        last = _seen.get(process)
        if last is None or last[0] != value:
            _seen[process] = (value, now)
        elif now - last[1] > limit:
            return process
    return None


def wait_for_all(
    run: str,
    name: str,
    check: Callable[[], None],
    timeout_s: float = 3600.0,
    poll_s: float = 0.2,
) -> None:
    """Wait until every process of ``run`` reached ``name`` (no-op in a single-process run),
    calling ``check`` while waiting: it raises (:class:`vizjax.errors.Interrupted`) when this
    process or another one stopped or is gone (:func:`gone_peer`), so a stopped process never
    leaves the others waiting. VizjaxError after ``timeout_s`` (a last resort)."""
    count = jax.process_count()
    if count == 1:
        return
    client = _client()
    deadline = time.monotonic() + timeout_s
    try:
        client.key_value_set(f"vizjax/{run}/{name}/{jax.process_index()}", "1")

        def arrived() -> bool:
            return len(client.key_value_dir_get(f"vizjax/{run}/{name}/")) >= count

        while not arrived():
            try:
                check()
            except Interrupted as e:
                # A process that reached ``name`` may have ended (and left the service) since.
                if e.signum == signal.SIGKILL and arrived():
                    return
                raise
            if time.monotonic() > deadline:
                raise VizjaxError(
                    f"waited {timeout_s:.0f} s for the other processes at {name}: one may have "
                    "been killed; rerun the same command on every process to resume"
                )
            time.sleep(poll_s)
    except (VizjaxError, Interrupted):  # check() said stop: not a lost connection
        raise
    except Exception as e:  # the coordination service is gone (process 0 was killed, say)
        msg = " ".join(str(e).split())[:200]
        raise VizjaxError(
            f"lost the other processes while waiting at {name} ({msg}); rerun the same command "
            "on every process to resume"
        ) from None
