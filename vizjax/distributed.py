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

import contextlib
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

from vizjax.errors import Interrupted, VizjaxError


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
    check(coordinator, num_processes, process_id, auto)
    if coordinator is None and not auto:
        return
    try:
        if coordinator is not None:
            if num_processes is None or process_id is None:
                raise VizjaxError("--coordinator needs --num-processes and --process-id")
            jax.distributed.initialize(coordinator, num_processes, process_id)
        else:
            jax.distributed.initialize()
    except (RuntimeError, ValueError) as e:
        raise VizjaxError(f"jax.distributed.initialize failed: {e}") from None


def check(
    coordinator: str | None, num_processes: int | None, process_id: int | None, auto: bool
) -> None:
    """VizjaxError unless the multi-process arguments are none, ``auto`` alone, or complete."""
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


def wait_for_all(
    run: str,
    name: str,
    check: Callable[[], None],
    timeout_s: float = 3600.0,
    poll_s: float = 0.2,
) -> None:
    """Wait until every process of ``run`` reached ``name`` (no-op in a single-process run),
    calling ``check`` while waiting: it raises (:class:`vizjax.errors.Interrupted`) when this
    process or another one stopped, so a stopped process never leaves the others waiting.
    VizjaxError after ``timeout_s`` (a process killed without a word)."""
    count = jax.process_count()
    if count == 1:
        return
    client = _client()
    deadline = time.monotonic() + timeout_s
    try:
        client.key_value_set(f"vizjax/{run}/{name}/{jax.process_index()}", "1")
        while True:
            check()
            if len(client.key_value_dir_get(f"vizjax/{run}/{name}/")) >= count:
                return
            if time.monotonic() > deadline:
                break
            time.sleep(poll_s)
    except (VizjaxError, Interrupted):  # check() said stop: not a lost connection
        raise
    except Exception as e:  # the coordination service is gone (process 0 was killed, say)
        msg = " ".join(str(e).split())[:200]
        raise VizjaxError(
            f"lost the other processes while waiting at {name} ({msg}); rerun the same command "
            "on every process to resume"
        ) from None
    raise VizjaxError(
        f"waited {timeout_s:.0f} s for the other processes at {name}: one may have been "
        "killed; rerun the same command on every process to resume"
    )
